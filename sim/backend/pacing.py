"""A pacer that spaces sends evenly at a fixed rate in wall time."""

from __future__ import annotations

import asyncio
import time


class Pacer:
    """Hands out send slots ``1 / rate`` wall seconds apart; a slot missed is not made up later."""

    def __init__(self, rate_per_second: float) -> None:
        if not rate_per_second > 0:
            raise ValueError(f"invalid send rate {rate_per_second!r}: give pushes per second > 0")
        self.interval = 1.0 / rate_per_second
        self._next_slot = 0.0

    async def wait(self) -> None:
        """Wait until the next slot; an idle pacer lets the first send go at once."""
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)
