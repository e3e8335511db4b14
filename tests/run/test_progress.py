"""Progress lines of a running rehearsal, read from a metrics server on loopback."""

from __future__ import annotations

import pytest

from sim.formats.epoch import Epoch
from sim.run.progress import ConversionCounter, accepted_pushes, progress_line

METRICS = (
    "# TYPE pushsim_gateway_requests_total counter\n"
    'pushsim_gateway_requests_total{service="apns",status="200"} 30\n'
    'pushsim_gateway_requests_total{service="fcm",status="200"} 12\n'
    'pushsim_gateway_requests_total{service="apns",status="410"} 5\n'
)


@pytest.fixture
def metrics_url(http_server):
    server, url = http_server
    server.body = METRICS
    return f"{url}/metrics"


def line(tmp_path, metrics_url: str | None, pushes_before: int = 0) -> str:
    epoch = Epoch(wall_t0=1_700_000_000.0, sim_t0=1_800_000_000.0, time_scale=60.0)
    counter = ConversionCounter(tmp_path)
    return progress_line(epoch, 1_800_000_000.0, 3600.0, tmp_path, counter, metrics_url,
                         pushes_before=pushes_before)  # fmt: skip


def test_accepted_pushes_sums_status_200(metrics_url):
    assert accepted_pushes(metrics_url) == 42


def test_progress_counts_pushes_of_this_run(tmp_path, metrics_url):
    assert "pushes accepted 42" in line(tmp_path, metrics_url)
    assert "pushes accepted 10" in line(tmp_path, metrics_url, pushes_before=32)


def test_progress_without_metrics(tmp_path):
    text = line(tmp_path, None)

    assert "pushes accepted -" in text
    assert "- req/s" in text
    assert "conversions 0" in text
