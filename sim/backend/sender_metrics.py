"""Counters and gauges of the push sender, as a dict and as Prometheus text, plus a log limiter.

Every series has a name and labels. ``as_dict`` returns a JSON-ready snapshot and
``render_prometheus`` the text exposition format (version 0.0.4).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

METRIC_PREFIX = "pushsim_sender_"

# Name, type and help text of every series the sender writes.
METRICS: dict[str, tuple[str, str]] = {
    "sends_total": ("counter", "Jobs finished, by service, outcome and reason."),
    "attempts_total": ("counter", "Requests sent to a push service, by service and status."),
    "retries_total": ("counter", "Attempts sent again after a retryable answer, by reason."),
    "prunes_total": ("counter", "Device tokens handed to on_prune, by service and reason."),
    "kept_total": ("counter", "Gone tokens kept because the device registered them again."),
    "drops_total": ("counter", "Jobs rejected by try_submit because the queue was full."),
    "callback_errors_total": ("counter", "Exceptions raised by on_outcome or on_prune."),
    "queue_depth": ("gauge", "Jobs waiting in the queue, by service."),
    "in_flight": ("gauge", "Jobs being sent, by service."),
}

Labels = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, object]) -> Labels:
    return tuple(sorted((key, str(value)) for key, value in labels.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class SenderMetrics:
    """Labelled counters and gauges of one sender.

    Example::

        metrics.inc("sends_total", service="fcm", outcome="delivered", reason="")
        metrics.value("sends_total", service="fcm")   # sums every matching series
    """

    def __init__(self) -> None:
        self._series: dict[str, Counter[Labels]] = {name: Counter() for name in METRICS}

    def inc(self, name: str, amount: int = 1, **labels: object) -> None:
        """Add ``amount`` to the series ``name`` with ``labels``."""
        self._series[name][_labels(labels)] += amount

    def set(self, name: str, value: int, **labels: object) -> None:
        """Set the gauge ``name`` with ``labels`` to ``value``."""
        self._series[name][_labels(labels)] = value

    def value(self, name: str, **labels: object) -> int:
        """Return the sum of every series ``name`` whose labels include ``labels``."""
        selected = set(_labels(labels))
        return sum(
            count for key, count in self._series[name].items() if selected.issubset(set(key))
        )

    def as_dict(self) -> dict[str, list[dict]]:
        """Return every series as ``{name: [{"labels": {...}, "value": n}, ...]}``."""
        return {
            name: [{"labels": dict(key), "value": count} for key, count in sorted(series.items())]
            for name, series in self._series.items()
        }

    def render_prometheus(self) -> str:
        """Return the series in the Prometheus text exposition format."""
        lines = []
        for name, series in self._series.items():
            kind, help_text = METRICS[name]
            full_name = METRIC_PREFIX + name
            lines.append(f"# HELP {full_name} {help_text}")
            lines.append(f"# TYPE {full_name} {kind}")
            for key, count in sorted(series.items()):
                label_text = ",".join(f'{label}="{_escape(value)}"' for label, value in key)
                series_name = f"{full_name}{{{label_text}}}" if key else full_name
                lines.append(f"{series_name} {count}")
        return "\n".join(lines) + "\n"


class LogLimiter:
    """Log the first ``burst`` messages of a kind per ``window`` seconds, then count the rest.

    When a window with suppressed messages ends, the next message of that kind is preceded by
    a count of the ones left out.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.window = window
        self.clock = clock
        self._windows: dict[str, tuple[float, int, int]] = {}

    def log(self, level: int, kind: str, message: str, *args: object, exc_info=None) -> None:
        """Log ``message`` unless ``kind`` already logged ``burst`` times in this window."""
        now = self.clock()
        started, logged, suppressed = self._windows.get(kind, (now, 0, 0))
        if now - started >= self.window:
            if suppressed:
                self.logger.log(
                    level,
                    "%d more %r messages were suppressed in the last %.0f s",
                    suppressed,
                    kind,
                    now - started,
                )
            started, logged, suppressed = now, 0, 0

        if logged < self.burst:
            self.logger.log(level, message, *args, exc_info=exc_info)
            logged += 1
        else:
            suppressed += 1
        self._windows[kind] = (started, logged, suppressed)
