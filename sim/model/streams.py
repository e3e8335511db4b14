"""Seeded random streams: one family per shopper group, one substream per purpose.

A group's streams come from ``numpy.random.SeedSequence([seed, group_id])`` spawned into
substreams for organic behaviour, push reactions and SDK faults, so a push reaction never
shifts the organic behaviour that follows it, and one group's draws never touch another's.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.random.bit_generator import ISeedSequence

from sim.model.seeding import SeedBlocks

ORGANIC, REACTIONS, FAULTS = 0, 1, 2

# Uniform and normal draws are taken from numpy in small blocks, because a scalar numpy call
# costs about 0.3 us against 0.07 us for a list pop. The block stays small to keep the memory
# of a million idle groups low.
_BLOCK = 16


class Stream:
    """One seeded substream with the distributions the model draws from."""

    __slots__ = ("_generator", "_uniforms", "_normals")

    def __init__(self, seed_sequence: ISeedSequence):
        self._generator = np.random.Generator(np.random.PCG64(seed_sequence))
        self._uniforms: list[float] = []
        self._normals: list[float] = []

    def uniform(self) -> float:
        """Return a float in [0, 1)."""
        if not self._uniforms:
            self._uniforms = self._generator.random(_BLOCK).tolist()
        return self._uniforms.pop()

    def chance(self, probability: float) -> bool:
        """Return True with ``probability``; always draws, so the stream stays aligned."""
        return self.uniform() < probability

    def normal(self) -> float:
        """Return a standard normal draw."""
        if not self._normals:
            self._normals = self._generator.standard_normal(_BLOCK).tolist()
        return self._normals.pop()

    def exponential(self, mean: float) -> float:
        """Return an exponential draw with ``mean``."""
        return -mean * math.log(1.0 - self.uniform())

    def lognormal(self, median: float, sigma: float) -> float:
        """Return a lognormal draw given its median and the sigma of its logarithm."""
        return median * math.exp(sigma * self.normal())

    def gamma(self, mean: float, shape: float) -> float:
        """Return a gamma draw given its mean and shape."""
        return float(self._generator.gamma(shape, mean / shape))

    def weibull(self, shape: float, scale: float) -> float:
        """Return a Weibull draw by inverting its CDF, 1 - exp(-(t/scale)^shape)."""
        return scale * (-math.log(1.0 - self.uniform())) ** (1.0 / shape)

    def pick(self, shares: list[float]) -> int:
        """Return an index drawn with the given shares, which sum to about 1."""
        u = self.uniform()
        total = 0.0
        for index, share in enumerate(shares):
            total += share
            if u < total:
                return index
        return len(shares) - 1

    def below(self, count: int) -> int:
        """Return an integer in [0, count)."""
        return min(int(self.uniform() * count), count - 1)

    def hex_id(self) -> str:
        """Return a random UUID-shaped id (version 4 layout), drawn from this stream."""
        # The same 16 bytes as Generator.bytes(16), which reads two 64-bit outputs as four
        # little-endian 32-bit words, in a quarter of its time (1.2 us against 5 us). Reading
        # the raw outputs skips the bit generator's spare 32-bit word. That changes nothing,
        # because every other draw of a Stream takes whole 64-bit outputs and leaves none.
        raw = bytearray(self._generator.bit_generator.random_raw(2).astype("<u8").tobytes())
        raw[6] = (raw[6] & 0x0F) | 0x40
        raw[8] = (raw[8] & 0x3F) | 0x80
        text = raw.hex()
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_SEED_BLOCKS = SeedBlocks()


class GroupStreams:
    """The substreams of one shopper group; reactions and faults are made on first use."""

    __slots__ = ("_seed", "_group_id", "organic", "_reactions", "_faults")

    def __init__(self, seed: int, group_id: int):
        self._seed = seed
        self._group_id = group_id
        self.organic = Stream(self._child(ORGANIC))
        self._reactions: Stream | None = None
        self._faults: Stream | None = None

    def _child(self, index: int) -> ISeedSequence:
        # The same child that SeedSequence([seed, group_id]).spawn(3)[index] returns, made
        # without spawning its siblings. Organic and fault streams are made in the order groups
        # arrive, so their words come from a block computed for many groups at once.
        if index == REACTIONS:
            return np.random.SeedSequence([self._seed, self._group_id], spawn_key=(index,))
        return _SEED_BLOCKS.seed_for(self._seed, self._group_id, index)

    @property
    def reactions(self) -> Stream:
        # Made at a group's first push, in no particular order of groups.
        if self._reactions is None:
            self._reactions = Stream(self._child(REACTIONS))
        return self._reactions

    @property
    def faults(self) -> Stream:
        if self._faults is None:
            self._faults = Stream(self._child(FAULTS))
        return self._faults
