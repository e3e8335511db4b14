"""Freezing the live heap: survivors leave the collected generations, and come back."""

from __future__ import annotations

import gc
import weakref

from sim.driver.heap import freeze_survivors, release_frozen


def test_freeze_then_release():
    survivors = [[index] for index in range(1000)]
    try:
        freeze_survivors()
        assert gc.get_freeze_count() >= len(survivors)
    finally:
        release_frozen()
    assert gc.get_freeze_count() == 0


def test_young_garbage_is_not_frozen():
    class Node:
        pass

    first, second = Node(), Node()
    first.other, second.other = second, first
    probe = weakref.ref(first)
    del first, second
    try:
        freeze_survivors()
        # The cycle was young garbage, so the collection before the freeze freed it.
        assert probe() is None
    finally:
        release_frozen()
