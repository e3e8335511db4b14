"""Progress lines for a running rehearsal: simulated time, wall time left, load and outcomes."""

from __future__ import annotations

import csv
import re
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from sim.formats.epoch import Epoch
from sim.oracle.generator import DROP_SHARE_LIMIT, falling_behind
from sim.oracle.sdk_errors import FIXES

# The run warns once at least this many SDK requests were sent and this share of them failed.
REJECTION_MIN_REQUESTS = 200
REJECTION_SHARE = 0.99
# Bytes read from the end of the stats history, which contains one row a second for each request
# name and the Aggregated row.
_HISTORY_TAIL_BYTES = 16384
# Wall seconds over which the current request rate is measured, at the least.
RATE_WINDOW_S = 3.0
# Locust's workers report every 3 s, later on a busy machine, so the master's totals rise in
# steps. A total unchanged for longer than this many wall seconds means no request went out.
STALL_S = 6.0
_BAD_STATUS = re.compile(r"BadStatus\((\d+)\)")

# Below this p95 response time a lane spends little time waiting for the backend, so a driver
# that falls behind is short of CPU rather than of lanes (wall ms, an estimate).
FAST_RESPONSE_MS = 50.0
# Byte patterns of truth ledger lines, as sim.formats.truth and the driver's sdk_call_line write
# them: compact JSON, "kind" then "status" at the start of every SDK call's line.
_CONVERTED = b'"step":"converted"'
_SENT = b'"kind":"sdk_call","status":"sent"'
_DROPPED = b'"kind":"sdk_call","status":"dropped"'


class LocustLoad(NamedTuple):
    """Locust's load: requests/s now, and requests and failures since the start.

    Failures are the requests Locust counts as failed, retries included: a connection error, or
    a status other than 2xx and the redirect codes.
    """

    requests_per_s: float
    requests: int
    failed: int
    # Locust's 95th percentile response time since the start, in wall ms, or None.
    p95_ms: float | None = None


def _locust_load(run_dir: Path) -> LocustLoad | None:
    """Return Locust's load so far, or None until Locust wrote its statistics.

    The counts come from the stats CSV, which Locust writes together with the failures CSV, so
    the two agree. Its requests/s is an average since the start, which trails the load for the
    whole run, so the rate comes from the stats history's last Aggregated row where there is one.
    """
    path = run_dir / "locust_stats.csv"
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("Name") == "Aggregated"]
        if not rows:
            return None
        average = float(rows[0].get("Requests/s") or 0.0)
        requests = int(rows[0].get("Request Count") or 0)
        failed = int(rows[0].get("Failure Count") or 0)
        p95 = rows[0].get("95%")
        # Locust writes N/A before the first response.
        p95_ms = float(p95) if p95 and p95 != "N/A" else None
    except (FileNotFoundError, ValueError):
        return None
    current = _current_rate(run_dir / "locust_stats_history.csv")
    return LocustLoad(average if current is None else current, requests, failed, p95_ms)


def _current_rate(path: Path) -> float | None:
    """Return the current requests/s from the end of the stats history, reading its end only.

    The rate is the slope of the Aggregated rows' Total Request Count between the last row where
    it changed and one at least RATE_WINDOW_S seconds before it, or the first row. Locust's own
    Requests/s column trails it at the start of a run: it read 0 while 429 requests had been
    sent, and 168 while about 300 a second went out.
    """
    try:
        with open(path, "rb") as handle:
            header = handle.readline().decode("utf-8")
            size = handle.seek(0, 2)
            start = max(len(header), size - _HISTORY_TAIL_BYTES)
            handle.seek(start)
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    columns = next(csv.reader([header]), [])
    if start > len(header):
        lines = lines[1:]  # cut by the seek

    # (timestamp, total requests) of each Aggregated row. The last line may still be being
    # written, and then fails to parse.
    totals: list[tuple[float, int]] = []
    for line in lines:
        row = dict(zip(columns, next(csv.reader([line]), []), strict=False))
        if row.get("Name") != "Aggregated":
            continue
        try:
            totals.append((float(row["Timestamp"]), int(row["Total Request Count"])))
        except (KeyError, ValueError):
            continue
    if len(totals) < 2:
        return None

    # The rate runs between the rows where the total changed, so that the steps of worker
    # reports neither read as a stop between two reports nor double at a report.
    steps = [
        row for index, row in enumerate(totals) if index == 0 or row[1] != totals[index - 1][1]
    ]
    step_at, step_total = steps[-1]
    if totals[-1][0] - step_at > STALL_S:
        return 0.0
    for at, total in reversed(steps[:-1]):
        if step_at - at >= RATE_WINDOW_S:
            return (step_total - total) / (step_at - at)
    at, total = totals[0]
    return (step_total - total) / (step_at - at) if step_at > at else None


def _failures_by_response(run_dir: Path) -> Counter[str]:
    """Count Locust's failed requests by response label: a status such as "404", or "no response".

    The driver reports a failed status as ``BadStatus(404)`` and a connection error as the
    exception itself, which Locust's failures CSV names in its Error column.
    """
    counts: Counter[str] = Counter()
    try:
        with open(run_dir / "locust_failures.csv", newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                status = _BAD_STATUS.fullmatch(row.get("Error") or "")
                label = status.group(1) if status else "no response"
                counts[label] += int(row.get("Occurrences") or 0)
    except (FileNotFoundError, ValueError):
        return Counter()
    return counts


def rejection_warning(run_dir: Path) -> str | None:
    """Return a warning when the backend rejected nearly every SDK request so far, else None.

    Such a run goes on to its end and fails the sdk_error_rate gate, which for a long rehearsal
    is long after the cause, usually credentials or a URL, could have been fixed.
    """
    load = _locust_load(run_dir)
    if load is None or load.requests < REJECTION_MIN_REQUESTS:
        return None
    if load.failed < REJECTION_SHARE * load.requests:
        return None
    failures = _failures_by_response(run_dir)
    breakdown = ", ".join(f"{label}: {count:,}" for label, count in failures.most_common())
    warning = f"the backend rejected {load.failed:,} of {load.requests:,} SDK requests so far"
    if breakdown:
        warning += f" ({breakdown})"
    fix = FIXES.get(failures.most_common(1)[0][0], "") if failures else ""
    if fix:
        warning += f"; {fix}"
    return f"{warning}. The run goes on; Ctrl-C stops it and writes a partial report."


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


class LedgerTail:
    """Counts in the truth ledgers, read from where the last update stopped.

    ``conversions`` counts converted pushes, and ``sent`` and ``dropped`` the SDK calls the
    driver sent or dropped past ``clock.lag_budget``. Only whole lines are read, so a line the
    driver is still writing counts at the next update.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.offsets: dict[Path, int] = {}
        self.conversions = 0
        self.sent = 0
        self.dropped = 0

    def update(self) -> None:
        for path in sorted(self.run_dir.glob("truth-*.jsonl")):
            offset = self.offsets.get(path, 0)
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            complete = chunk.rfind(b"\n") + 1
            lines = chunk[:complete]
            self.conversions += lines.count(_CONVERTED)
            self.sent += lines.count(_SENT)
            self.dropped += lines.count(_DROPPED)
            self.offsets[path] = offset + complete


def behind_warning(tail: LedgerTail, run_dir: Path | None = None) -> str | None:
    """Return a warning when the driver dropped more SDK calls than a trusted run may, else None.

    The report flags such a run at its end, when the backend's figures already rest on less load
    than the scenario describes. With ``run_dir``, Locust's response times there pick the fix:
    a backend that responds fast leaves only the driver's CPU to blame.
    """
    if not falling_behind(tail.sent, tail.dropped):
        return None
    offered = tail.sent + tail.dropped
    load = _locust_load(run_dir) if run_dir is not None else None
    if load is not None and load.p95_ms is not None and load.p95_ms < FAST_RESPONSE_MS:
        cause = (
            f"The backend responds fast (p95 {load.p95_ms:.0f} ms), so the driver's process is "
            "short of CPU: add --processes"
        )
    else:
        p95 = f" (p95 {load.p95_ms:.0f} ms)" if load is not None and load.p95_ms else ""
        cause = (
            "The driver's process is short of CPU (add --processes) or every lane waits for "
            f"slow responses{p95} (add --users)"
        )
    return (
        f"the driver dropped {tail.dropped:,} of {offered:,} SDK calls so far "
        f"({tail.dropped / offered:.1%}), each more than clock.lag_budget late, so the backend "
        "gets less load than the scenario describes. If more than "
        f"{DROP_SHARE_LIMIT:.0%} of all the run's calls are dropped by its end, the report marks "
        f"the run GENERATOR FELL BEHIND and a gate generator_drops <= {DROP_SHARE_LIMIT:g} fails. "
        f"{cause}; a lower population.installs or clock.time_scale lowers the load. The run "
        "goes on; Ctrl-C stops it and writes a partial report."
    )


def progress_line(
    epoch: Epoch,
    run_start: float,
    sim_end: float,
    run_dir: Path,
    tail: LedgerTail,
    metrics_url: str | None = None,
    token: str | None = None,
    pushes_before: int = 0,
) -> str:
    """Return one progress line of the run.

    It shows the simulated day and time, wall seconds left, requests/s, failed requests and
    dropped SDK calls when there are any, accepted pushes and conversions. It updates ``tail``.
    ``pushes_before`` is the gateways' count of accepted pushes when the run began, which is
    not 0 for gateways that served earlier runs.
    """
    now = time.time()
    sim_offset = max(0.0, epoch.sim_at(now) - run_start)
    wall_left = max(0.0, epoch.wall_at(run_start + sim_end) - now)
    day, rest = divmod(int(sim_offset), 86400)
    hours, rest = divmod(rest, 3600)

    requests = "   - req/s"
    load = _locust_load(run_dir)
    if load is not None:
        requests = f"{load.requests_per_s:6.1f} req/s"
        if load.failed:
            requests += f"  failed {load.failed:,}"
    tail.update()
    if tail.dropped:
        requests += f"  dropped {tail.dropped:,}"

    pushes = accepted_pushes(metrics_url, token)
    if pushes is not None:
        pushes = max(0, pushes - pushes_before)
    parts = [
        f"sim day {day + 1} {hours:02d}:{rest // 60:02d}",
        f"{wall_left:4.0f} s left",
        requests,
        f"pushes accepted {pushes}" if pushes is not None else "pushes accepted -",
        f"conversions {tail.conversions}",
    ]
    return "  ".join(parts)
