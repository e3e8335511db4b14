"""Prometheus metrics of the gateways, rendered in the text exposition format (version 0.0.4).

Counters and the latency histogram are updated on the push path. Gauges that describe other
parts (tokens, ledger backlog, active faults) are read when /metrics is scraped, through
collectors registered by the world.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Callable, Iterable

from sim.gateways.hooks import Outcome, PushRequest, Service

# Upper bounds in wall seconds of the added-latency histogram buckets.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Sample = tuple[str, dict[str, object], float]
Collector = Callable[[float], Iterable[tuple[str, str, str, list[Sample]]]]


def _labels(labels: dict[str, object]) -> str:
    if not labels:
        return ""
    parts = []
    for name, value in labels.items():
        text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{name}="{text}"')
    return "{" + ",".join(parts) + "}"


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class GatewayMetrics:
    """The gateways' counters and gauges, and the text /metrics returns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int, str]] = Counter()
        self.faults_applied: Counter[tuple[str, str]] = Counter()
        self.connections: Counter[str] = Counter()
        self.streams_in_flight: Counter[str] = Counter()
        self._latency_buckets: dict[str, list[int]] = {}
        self._latency_sum: Counter[str] = Counter()
        self._latency_count: Counter[str] = Counter()
        self._collectors: list[Collector] = []

    def observe(self, request: PushRequest, outcome: Outcome) -> None:
        """Count one answered push and its added latency."""
        service = request.service.value
        with self._lock:
            self.requests[(service, outcome.status, outcome.reason or "")] += 1
            if outcome.added_latency > 0:
                buckets = self._latency_buckets.get(service)
                if buckets is None:
                    buckets = self._latency_buckets[service] = [0] * len(LATENCY_BUCKETS)
                index = bisect.bisect_left(LATENCY_BUCKETS, outcome.added_latency)
                if index < len(buckets):
                    buckets[index] += 1
                self._latency_sum[service] += outcome.added_latency
                self._latency_count[service] += 1

    def fault_applied(self, service: Service, kind: str) -> None:
        with self._lock:
            self.faults_applied[(service.value, kind)] += 1

    def connection_opened(self, service: Service) -> None:
        with self._lock:
            self.connections[service.value] += 1

    def connection_closed(self, service: Service) -> None:
        with self._lock:
            self.connections[service.value] -= 1

    def stream_started(self, service: Service) -> None:
        with self._lock:
            self.streams_in_flight[service.value] += 1

    def stream_ended(self, service: Service) -> None:
        with self._lock:
            self.streams_in_flight[service.value] -= 1

    def add_collector(self, collector: Collector) -> None:
        """Register ``collector(now)`` yielding ``(name, type, help, samples)`` at each scrape."""
        self._collectors.append(collector)

    def render(self, now: float) -> str:
        """Return every metric in the Prometheus text format at wall time ``now``."""
        families = list(self._own_families())
        for collector in self._collectors:
            families.extend(collector(now))

        lines = []
        for name, kind, help_text, samples in families:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for sample_name, labels, value in samples:
                lines.append(f"{sample_name}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"

    def _own_families(self):
        with self._lock:
            requests = sorted(self.requests.items())
            faults = sorted(self.faults_applied.items())
            connections = sorted(self.connections.items())
            streams = sorted(self.streams_in_flight.items())
            buckets = {service: list(counts) for service, counts in self._latency_buckets.items()}
            sums = dict(self._latency_sum)
            counts = dict(self._latency_count)

        yield (
            "pushsim_gateway_requests_total",
            "counter",
            "Push requests answered, by service, status and reason.",
            [
                ("pushsim_gateway_requests_total",
                 {"service": service, "status": status, "reason": reason}, value)
                for (service, status, reason), value in requests
            ],
        )  # fmt: skip
        yield (
            "pushsim_gateway_faults_applied_total",
            "counter",
            "Pushes or connections a scripted fault acted on, by service and fault kind.",
            [
                ("pushsim_gateway_faults_applied_total", {"service": service, "kind": kind}, value)
                for (service, kind), value in faults
            ],
        )
        yield (
            "pushsim_gateway_connections",
            "gauge",
            "Open client connections, by service.",
            [("pushsim_gateway_connections", {"service": s}, v) for s, v in connections],
        )
        yield (
            "pushsim_gateway_streams_in_flight",
            "gauge",
            "HTTP/2 streams or requests being answered, by service.",
            [("pushsim_gateway_streams_in_flight", {"service": s}, v) for s, v in streams],
        )

        samples: list[Sample] = []
        for service, counts_by_bucket in sorted(buckets.items()):
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS, counts_by_bucket, strict=True):
                cumulative += count
                samples.append(
                    ("pushsim_gateway_added_latency_seconds_bucket",
                     {"service": service, "le": bound}, cumulative)
                )  # fmt: skip
            samples.append(
                ("pushsim_gateway_added_latency_seconds_bucket",
                 {"service": service, "le": "+Inf"}, counts[service])
            )  # fmt: skip
            samples.append(
                ("pushsim_gateway_added_latency_seconds_sum", {"service": service}, sums[service])
            )
            samples.append(
                ("pushsim_gateway_added_latency_seconds_count", {"service": service},
                 counts[service])
            )  # fmt: skip
        yield (
            "pushsim_gateway_added_latency_seconds",
            "histogram",
            "Latency added by scripted faults, in wall seconds.",
            samples,
        )
