"""Seed words of many groups' substreams at once, the same words numpy's SeedSequence gives.

Each substream is ``SeedSequence([seed, group_id], spawn_key=(index,))`` feeding a PCG64. Made
one at a time that costs about 7.5 us a group (4.4 us to mix the entropy, 3.1 us to draw the
state words), most of it numpy's call overhead on four-element arrays. Groups arrive in the
order of their ids, so the words of the next block of ids are computed together with array
arithmetic, and each group's PCG64 is built from its row through ``PresetSeed``.

The arithmetic is the hash SeedSequence uses: a 4-word pool filled and mixed with a hash whose
multiplier advances on every use, then read out through a second hash. Every word is 32 bits,
held in uint64 arrays and masked after each product. tests/model/test_seeding.py checks the
words against SeedSequence itself.
"""

from __future__ import annotations

import numpy as np
from numpy.random.bit_generator import ISeedSequence

_POOL_SIZE = 4
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_XSHIFT = 16
_MASK = 0xFFFFFFFF
# Words PCG64 requests from its seed sequence: 4 uint64, the state then the increment.
_PCG64_WORDS = 4

# Group ids whose words are computed together, and how many blocks are kept. Ids never reach
# 2**32, so each takes one entropy word; the code checks it.
BLOCK = 512
_KEPT = 16


def _words(value: int) -> list[int]:
    """Return a non-negative integer as 32-bit words, least significant first, as numpy does."""
    if value < 0:
        raise ValueError(f"seed entropy must be non-negative, got {value}")
    words = []
    while True:
        words.append(value & _MASK)
        value >>= 32
        if value == 0:
            return words


def pcg64_words(seed: int, group_ids: np.ndarray, index: int) -> np.ndarray:
    """Return the PCG64 seed words of each group's substream ``index``, shape (groups, 4).

    Row ``i`` equals ``SeedSequence([seed, group_ids[i]], spawn_key=(index,))``
    ``.generate_state(4, np.uint64)``. Group ids must lie in [0, 2**32).
    """
    ids = np.asarray(group_ids, dtype=np.uint64)
    if ids.size and int(ids.max()) > _MASK:
        raise ValueError(
            f"group id {int(ids.max())} is invalid for block seeding: ids must be below 2**32, "
            "since larger ids take two entropy words"
        )

    # The assembled entropy: the seed's words and the group id, zeros up to the pool size (numpy
    # pads whenever a spawn key is given), then the spawn key's words.
    columns: list[np.ndarray | int] = [*_words(seed), ids]
    columns += [0] * (_POOL_SIZE - len(columns))
    columns += _words(index)
    entropy = [np.full(ids.shape, column, dtype=np.uint64) for column in columns]

    multiplier = _INIT_A

    def hashmix(value: np.ndarray) -> np.ndarray:
        nonlocal multiplier
        value = value ^ np.uint64(multiplier)
        multiplier = (multiplier * _MULT_A) & _MASK
        value = (value * np.uint64(multiplier)) & _MASK
        return value ^ (value >> _XSHIFT)

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        result = ((x * _MIX_MULT_L) - (y * _MIX_MULT_R)) & _MASK
        return result ^ (result >> _XSHIFT)

    pool = [hashmix(entropy[i]) for i in range(_POOL_SIZE)]
    for source in range(_POOL_SIZE):
        for target in range(_POOL_SIZE):
            if source != target:
                pool[target] = mix(pool[target], hashmix(pool[source]))
    for word in entropy[_POOL_SIZE:]:
        for target in range(_POOL_SIZE):
            pool[target] = mix(pool[target], hashmix(word))

    # Eight 32-bit words read out of the pool in turn, paired little-endian into four uint64.
    state = []
    multiplier = _INIT_B
    for position in range(2 * _PCG64_WORDS):
        value = pool[position % _POOL_SIZE] ^ np.uint64(multiplier)
        multiplier = (multiplier * _MULT_B) & _MASK
        value = (value * np.uint64(multiplier)) & _MASK
        state.append(value ^ (value >> _XSHIFT))
    pairs = [state[2 * i] | (state[2 * i + 1] << np.uint64(32)) for i in range(_PCG64_WORDS)]
    return np.stack(pairs, axis=1)


class PresetSeed(ISeedSequence):
    """A stand-in for ``SeedSequence([seed, group_id], spawn_key=(index,))`` with its PCG64
    words already computed; any other request goes to a real SeedSequence."""

    __slots__ = ("seed", "group_id", "index", "words")

    def __init__(self, seed: int, group_id: int, index: int, words: np.ndarray):
        self.seed = seed
        self.group_id = group_id
        self.index = index
        self.words = words

    def generate_state(self, n_words: int, dtype=np.uint32) -> np.ndarray:
        if n_words == _PCG64_WORDS and np.dtype(dtype) == np.uint64:
            return self.words
        sequence = np.random.SeedSequence([self.seed, self.group_id], spawn_key=(self.index,))
        return sequence.generate_state(n_words, dtype)


class SeedBlocks:
    """Recent blocks of PCG64 seed words by (seed, substream index, first group id of block).

    Only for substreams made in the order of group ids, as organic streams are when groups
    arrive: a lookup behind the recent blocks computes its whole block again.
    """

    def __init__(self) -> None:
        self._blocks: dict[tuple[int, int, int], np.ndarray] = {}

    def seed_for(self, seed: int, group_id: int, index: int) -> ISeedSequence:
        """Return the seed sequence of one group's substream ``index``."""
        start = group_id - group_id % BLOCK
        block = self._blocks.get((seed, index, start))
        if block is None:
            block = pcg64_words(seed, np.arange(start, start + BLOCK), index)
            self._blocks[(seed, index, start)] = block
            if len(self._blocks) > _KEPT:
                del self._blocks[next(iter(self._blocks))]
        return PresetSeed(seed, group_id, index, block[group_id - start])
