"""The backend's counters and their Prometheus text exposition (format version 0.0.4)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Upper bounds of the write batch size histogram (writes per commit).
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    pairs = (f'{name}="{_escape(value)}"' for name, value in labels.items())
    return "{" + ",".join(pairs) + "}"


class Metrics:
    """Counters that the handlers and the store's writer update, rendered for ``/metrics``.

    Every method is safe to call from the writer thread as well as from the event loop.
    """

    def __init__(self, queue_depth: Callable[[], int] = lambda: 0) -> None:
        self.queue_depth = queue_depth
        # Other components' metrics, each a function that returns Prometheus text.
        self.sources: list[Callable[[], str]] = []
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._events: Counter[str] = Counter()
        self._duplicates: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._rate_limited: Counter[str] = Counter()
        self._journey_runs: Counter[tuple[str, str]] = Counter()
        self._pushes: Counter[tuple[str, str]] = Counter()
        self._pruned: Counter[str] = Counter()
        self._batch_buckets = [0] * len(BATCH_SIZE_BUCKETS)
        self._batch_count = 0
        self._batch_sum = 0

    def count_request(self, route: str, method: str, status: int) -> None:
        with self._lock:
            self._requests[(route, method, status)] += 1

    def count_event(self, source: str) -> None:
        with self._lock:
            self._events[source] += 1

    def count_duplicate(self, source: str) -> None:
        with self._lock:
            self._duplicates[source] += 1

    def count_dropped(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self._dropped[reason] += count

    def count_rate_limited(self, api: str) -> None:
        with self._lock:
            self._rate_limited[api] += 1

    def count_journey_runs(self, journey: str, stage: str, count: int = 1) -> None:
        """Count journey runs that reached ``stage`` (started, exited, sent, capped, ...)."""
        with self._lock:
            self._journey_runs[(journey, stage)] += count

    def count_push(self, journey: str, outcome: str) -> None:
        """Count one push by its journey and final outcome (accepted, rejected or failed)."""
        with self._lock:
            self._pushes[(journey, outcome)] += 1

    def count_pruned(self, reason: str) -> None:
        with self._lock:
            self._pruned[reason] += 1

    def observe_batch(self, size: int) -> None:
        with self._lock:
            self._batch_count += 1
            self._batch_sum += size
            for index, bound in enumerate(BATCH_SIZE_BUCKETS):
                if size <= bound:
                    self._batch_buckets[index] += 1

    def _render_journeys(self) -> list[str]:
        lines = [
            "# HELP pushsim_backend_journey_runs_total Journey runs by journey and stage reached "
            "(started, exited, sent, capped, quiet_held, no_device, no_permission, failed).",
            "# TYPE pushsim_backend_journey_runs_total counter",
        ]
        for (journey, stage), count in sorted(self._journey_runs.items()):
            labels = _labels(journey=journey, stage=stage)
            lines.append(f"pushsim_backend_journey_runs_total{labels} {count}")

        lines += [
            "# HELP pushsim_backend_journey_pushes_total Pushes by journey and sender outcome.",
            "# TYPE pushsim_backend_journey_pushes_total counter",
        ]
        for (journey, outcome), count in sorted(self._pushes.items()):
            labels = _labels(journey=journey, outcome=outcome)
            lines.append(f"pushsim_backend_journey_pushes_total{labels} {count}")

        lines += [
            "# HELP pushsim_backend_devices_pruned_total Device tokens pruned after a gateway "
            "reported them dead, by reason.",
            "# TYPE pushsim_backend_devices_pruned_total counter",
        ]
        for reason, count in sorted(self._pruned.items()):
            lines.append(f"pushsim_backend_devices_pruned_total{_labels(reason=reason)} {count}")
        return lines

    def render(self) -> str:
        """Return every metric in the Prometheus text format."""
        with self._lock:
            lines = [
                "# HELP pushsim_backend_requests_total HTTP requests by route, method and status.",
                "# TYPE pushsim_backend_requests_total counter",
            ]
            for (route, method, status), count in sorted(self._requests.items()):
                labels = _labels(route=route, method=method, status=str(status))
                lines.append(f"pushsim_backend_requests_total{labels} {count}")

            lines += [
                "# HELP pushsim_backend_events_stored_total Events stored, by intake API.",
                "# TYPE pushsim_backend_events_stored_total counter",
            ]
            for source, count in sorted(self._events.items()):
                lines.append(f"pushsim_backend_events_stored_total{_labels(api=source)} {count}")

            lines += [
                "# HELP pushsim_backend_duplicates_total Messages skipped as already processed.",
                "# TYPE pushsim_backend_duplicates_total counter",
            ]
            for source, count in sorted(self._duplicates.items()):
                lines.append(f"pushsim_backend_duplicates_total{_labels(api=source)} {count}")

            lines += [
                "# HELP pushsim_backend_dropped_total CDP messages dropped, by reason.",
                "# TYPE pushsim_backend_dropped_total counter",
            ]
            for reason, count in sorted(self._dropped.items()):
                lines.append(f"pushsim_backend_dropped_total{_labels(reason=reason)} {count}")

            lines += [
                "# HELP pushsim_backend_rate_limited_total Requests answered 429, by intake API.",
                "# TYPE pushsim_backend_rate_limited_total counter",
            ]
            for api, count in sorted(self._rate_limited.items()):
                lines.append(f"pushsim_backend_rate_limited_total{_labels(api=api)} {count}")

            lines += self._render_journeys()

            lines += [
                "# HELP pushsim_backend_write_batch_size Writes committed per SQLite transaction.",
                "# TYPE pushsim_backend_write_batch_size histogram",
            ]
            for bound, count in zip(BATCH_SIZE_BUCKETS, self._batch_buckets, strict=True):
                lines.append(f'pushsim_backend_write_batch_size_bucket{{le="{bound}"}} {count}')
            lines.append(
                f'pushsim_backend_write_batch_size_bucket{{le="+Inf"}} {self._batch_count}'
            )
            lines.append(f"pushsim_backend_write_batch_size_sum {self._batch_sum}")
            lines.append(f"pushsim_backend_write_batch_size_count {self._batch_count}")

        lines += [
            "# HELP pushsim_backend_write_queue_depth Writes waiting to be committed.",
            "# TYPE pushsim_backend_write_queue_depth gauge",
            f"pushsim_backend_write_queue_depth {self.queue_depth()}",
        ]
        text = "\n".join(lines) + "\n"
        return text + "".join(source() for source in self.sources)
