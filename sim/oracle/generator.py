"""Health of the load generator: SDK calls it dropped past its lag budget, and its schedule lag.

When the generator falls behind, the backend saw less load and fewer events than the model
lived, so the backend's figures cannot be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.oracle.ledger import DROPPED, UNSENT, TruthIndex
from sim.oracle.stats import summarise

# Share of SDK calls dropped above which the run's backend figures are flagged as untrustworthy.
DROP_SHARE_LIMIT = 0.01
# SDK calls a running rehearsal offers before it warns about drops, so that the first few late
# calls of a warming process do not set it off.
LIVE_WARNING_MIN_CALLS = 1000


def falling_behind(sent: int, dropped: int) -> bool:
    """Tell whether a running rehearsal has dropped enough of its SDK calls to warn about it."""
    offered = sent + dropped
    return offered >= LIVE_WARNING_MIN_CALLS and dropped > DROP_SHARE_LIMIT * offered


@dataclass
class GeneratorHealth:
    """Dropped SDK calls and the schedule lag of those sent, in wall milliseconds."""

    calls_by_status: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    drop_share: float = 0.0
    lag_ms: dict[str, float | int | None] = field(default_factory=dict)
    fell_behind: bool = False
    message: str = ""


def judge_generator(index: TruthIndex) -> GeneratorHealth:
    """Count dropped SDK calls, summarise lag, and flag a generator that fell behind."""
    counts = dict(sorted(index.status_counts.items()))
    dropped = counts.get(DROPPED, 0)
    # Local calls never leave the app, and unsent ones were held back by a stop, not by the
    # generator, so neither is part of the load offered.
    offered = sum(count for status, count in counts.items() if status not in ("local", UNSENT))
    share = dropped / offered if offered else 0.0
    health = GeneratorHealth(
        calls_by_status=counts,
        dropped=dropped,
        drop_share=share,
        lag_ms=summarise(index.lags_ms),
        fell_behind=share > DROP_SHARE_LIMIT,
    )
    if health.fell_behind:
        health.message = (
            f"generator fell behind: {dropped} of {offered} SDK calls dropped "
            f"({share:.1%}, limit {DROP_SHARE_LIMIT:.0%}); backend figures cannot be trusted"
        )
    return health
