"""When to send a push again: exponential backoff with equal jitter, bounded, and Retry-After.

Equal jitter draws each wait uniformly from half the exponential ceiling to the ceiling. Senders
that failed together still spread out, and no retry comes back at once, which full jitter
allows and which is what a service under a brown-out needs least.
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one job.

    ``max_attempts`` counts every send of a job, the first included. ``max_elapsed`` is the
    wall seconds from the first attempt after which no retry starts. ``base`` and ``cap`` bound
    the backoff ceiling in seconds: ``min(cap, base * 2 ** (retry - 1))``.
    """

    max_attempts: int = 5
    max_elapsed: float = 60.0
    base: float = 0.5
    cap: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"invalid max_attempts {self.max_attempts!r}: use 1 or more")
        if self.max_elapsed < 0 or self.base < 0 or self.cap < 0:
            raise ValueError(
                f"invalid retry timing (max_elapsed={self.max_elapsed!r}, base={self.base!r}, "
                f"cap={self.cap!r}): use seconds >= 0"
            )

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Return the wait in seconds before retry number ``retry`` (1 for the first retry)."""
        exponent = min(max(retry - 1, 0), 62)
        ceiling = min(self.cap, self.base * 2.0**exponent)
        return (rng or random).uniform(ceiling / 2.0, ceiling)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the wait in seconds that a ``Retry-After`` value requests, or None if invalid.

    The value is either whole seconds or an HTTP-date (RFC 9110, section 10.2.3). ``now`` is
    the wall Unix time in seconds. A date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None

    if text.isdigit():
        return float(int(text))

    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None or moment.tzinfo is None:
        return None
    delay = moment.timestamp() - now
    return max(0.0, delay) if math.isfinite(delay) else None
