"""Progress lines for a running rehearsal: simulated time, wall time left, load and outcomes."""

from __future__ import annotations

import csv
import time
import urllib.request
from pathlib import Path

from sim.formats.epoch import Epoch


def _locust_load(run_dir: Path) -> tuple[float, int] | None:
    """Return the current requests/s and the failed requests so far of Locust's Aggregated row.

    Failed requests are those Locust counts as failures, retries included: a connection error,
    or a status other than 2xx and the redirect codes. None until Locust wrote its CSV.
    """
    path = run_dir / "locust_stats.csv"
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row.get("Name") == "Aggregated":
                    return float(row.get("Requests/s") or 0.0), int(row.get("Failure Count") or 0)
    except (FileNotFoundError, ValueError):
        return None
    return None


def accepted_pushes(metrics_url: str | None, token: str | None = None) -> int | None:
    """Sum the gateways' accepted pushes (status 200) from their Prometheus text."""
    if not metrics_url:
        return None
    request = urllib.request.Request(metrics_url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=1.0) as response:  # noqa: S310 - loopback
            text = response.read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith("pushsim_gateway_requests_total{") and 'status="200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


class ConversionCounter:
    """Counts converted pushes in the truth ledgers by reading only what was appended."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.offsets: dict[Path, int] = {}
        self.count = 0

    def update(self) -> int:
        for path in sorted(self.run_dir.glob("truth-*.jsonl")):
            offset = self.offsets.get(path, 0)
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            complete = chunk.rfind(b"\n") + 1
            self.count += chunk[:complete].count(b'"step":"converted"')
            self.offsets[path] = offset + complete
        return self.count


def progress_line(
    epoch: Epoch,
    run_start: float,
    sim_end: float,
    run_dir: Path,
    conversions: ConversionCounter,
    metrics_url: str | None = None,
    token: str | None = None,
    pushes_before: int = 0,
) -> str:
    """Return one progress line of the run.

    It shows the simulated day and time, wall seconds left, requests/s, failed requests when
    there are any, accepted pushes and conversions. ``pushes_before`` is the gateways' count of
    accepted pushes when the run began, which is not 0 for gateways that served earlier runs.
    """
    now = time.time()
    sim_offset = max(0.0, epoch.sim_at(now) - run_start)
    wall_left = max(0.0, epoch.wall_at(run_start + sim_end) - now)
    day, rest = divmod(int(sim_offset), 86400)
    hours, rest = divmod(rest, 3600)

    requests = "   - req/s"
    load = _locust_load(run_dir)
    if load is not None:
        rps, failed = load
        requests = f"{rps:6.1f} req/s"
        if failed:
            requests += f"  failed {failed:,}"

    pushes = accepted_pushes(metrics_url, token)
    if pushes is not None:
        pushes = max(0, pushes - pushes_before)
    parts = [
        f"sim day {day + 1} {hours:02d}:{rest // 60:02d}",
        f"{wall_left:4.0f} s left",
        requests,
        f"pushes accepted {pushes}" if pushes is not None else "pushes accepted -",
        f"conversions {conversions.update()}",
    ]
    return "  ".join(parts)
