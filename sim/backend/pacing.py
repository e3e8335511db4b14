"""A pacer that spaces sends at a fixed rate in wall time."""

from __future__ import annotations

import asyncio
import time


class Pacer:
    """Lets one send through every ``1 / rate`` wall seconds at most.

    Each gap is measured from the moment the previous send was let through, so a send that
    went late is never made up by a shorter gap after it.
    """

    def __init__(self, rate_per_second: float) -> None:
        if not rate_per_second > 0:
            raise ValueError(f"invalid send rate {rate_per_second!r}: give pushes per second > 0")
        self.interval = 1.0 / rate_per_second
        self._next_slot = 0.0

    async def wait(self) -> None:
        """Wait until the next send may go; an idle pacer lets it go at once."""
        delay = self._next_slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self._next_slot = time.monotonic() + self.interval
