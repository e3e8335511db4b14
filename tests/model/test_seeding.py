"""Seed words computed for a block of groups equal numpy's SeedSequence, one group at a time."""

from __future__ import annotations

import numpy as np
import pytest

from sim.model.seeding import BLOCK, SeedBlocks, pcg64_words
from sim.model.streams import GroupStreams, Stream

# Seeds of one, two and four 32-bit words, and group ids at both ends of their range.
SEEDS = [0, 11, 20261127, 2**32 - 1, 2**32, 2**100 + 3]
GROUP_IDS = [*range(0, 70), 2**31, 2**32 - 1]


def expected_words(seed: int, group_id: int, index: int) -> np.ndarray:
    sequence = np.random.SeedSequence([seed, group_id], spawn_key=(index,))
    return sequence.generate_state(4, np.uint64)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("index", [0, 1, 2, 2**40])
def test_words_match_seed_sequence(seed, index):
    words = pcg64_words(seed, np.array(GROUP_IDS), index)

    for row, group_id in zip(words, GROUP_IDS, strict=True):
        assert row.tolist() == expected_words(seed, group_id, index).tolist()


def test_group_ids_past_32_bits_rejected():
    with pytest.raises(ValueError, match="must be below 2"):
        pcg64_words(5, np.array([2**32]), 0)


def test_streams_match_seed_sequence():
    blocks = SeedBlocks()
    # Forwards through several blocks, then back to an early one, as a second run does.
    group_ids = [*range(1, 4 * BLOCK, 97), 3]

    for group_id in group_ids:
        for index in (0, 1, 2):
            stream = Stream(blocks.seed_for(7, group_id, index))
            sequence = np.random.SeedSequence([7, group_id], spawn_key=(index,))
            expected = Stream(sequence)

            assert stream.uniform() == expected.uniform()
            assert stream.normal() == expected.normal()
            assert stream.hex_id() == expected.hex_id()


def test_group_streams_match_seed_sequence():
    for group_id in (1, 2, BLOCK + 5):
        streams = GroupStreams(7, group_id)
        substreams = (streams.organic, streams.reactions, streams.faults)

        for index, stream in enumerate(substreams):
            sequence = np.random.SeedSequence([7, group_id], spawn_key=(index,))

            assert stream.uniform() == Stream(sequence).uniform()
