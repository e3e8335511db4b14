"""Rate-limited logging for errors that can repeat once per push."""

from __future__ import annotations

import logging
import threading
import time


class RepeatLimiter:
    """Log a message once per key and interval, and count the repeats it held back.

    A push storm that hits the same error thousands of times a second logs it once per
    ``interval`` wall seconds, followed by how many times it repeated.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless ``key`` was logged less than ``interval`` ago."""
        now = time.monotonic()
        with self._lock:
            last, held = self._last.get(key, (float("-inf"), 0))
            if now - last < self._interval:
                self._last[key] = (last, held + 1)
                return
            self._last[key] = (now, 0)

            # The key set stays small (one per error kind), but a caller that puts ids in keys
            # must not grow it without bound.
            if len(self._last) > 1000:
                self._last.clear()

        if held:
            message = f"{message} (repeated {held} times since the last report)"
        self._logger.log(level, message, *args)
