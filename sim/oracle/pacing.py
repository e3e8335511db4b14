"""The pacing of a broadcast's pushes in wall time, against its send_rate.

A launch rehearsal checks whether the backend kept its send-rate limit. The gateways stamp each
push request with its wall arrival time, so the oracle can count the busiest wall second. Only
first attempts count: a retry is not a new send that the limit paces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.oracle.pushes import Push

# Width in wall seconds of the window in which the busiest count is taken.
WINDOW_SECONDS = 1.0

# Share above the limit that still counts as kept. The gateways stamp arrival, not the
# backend's send, and pushes spread over several connections arrive a little out of step.
JITTER_SHARE = 0.10


@dataclass(frozen=True)
class Pacing:
    """A broadcast's first push requests in wall time, and the busiest wall second."""

    send_rate: float  # the journey's limit, pushes per wall second
    pushes: int  # first attempts with the broadcast's link in its window
    seconds: float  # wall seconds from the first push request to the last
    peak_per_second: int  # most first attempts within any window of WINDOW_SECONDS

    @property
    def within_limit(self) -> bool:
        """Tell whether the busiest second kept the limit, give or take arrival jitter.

        A pacer that lets one push through every 1 / send_rate seconds puts up to
        send_rate + 1 pushes in a closed window of one second, counting both ends.
        """
        allowed = math.floor(self.send_rate * WINDOW_SECONDS * (1.0 + JITTER_SHARE)) + 1
        return self.peak_per_second <= allowed

    def describe(self) -> str:
        if not self.pushes:
            return f"no push request sent (send_rate {self.send_rate:g})"
        verdict = "within" if self.within_limit else "OVER"
        return (
            f"{self.pushes} push(es) in {self.seconds:.2f} wall s, at most "
            f"{self.peak_per_second} in any wall second ({verdict} send_rate {self.send_rate:g})"
        )


def broadcast_pacing(send_rate: float, pushes: list[Push]) -> Pacing:
    """Measure the pacing of a broadcast's ``pushes``; retries are left out."""
    times = sorted(push.row.wall_time for push in pushes if push.row.retry_of is None)
    peak = 0
    start = 0
    for end, time in enumerate(times):
        while time - times[start] > WINDOW_SECONDS:
            start += 1
        peak = max(peak, end - start + 1)
    seconds = times[-1] - times[0] if times else 0.0
    return Pacing(send_rate=send_rate, pushes=len(times), seconds=seconds, peak_per_second=peak)
