"""Throughput and schedule lag of the Locust driver against a bare FastHttpUser loop.

Run: ``python tests/bench/bench_driver.py [--seconds S] [--quick]``. Takes about six minutes
with the defaults. Uses nginx when it is on PATH (Debian/Ubuntu: ``apt-get install nginx-light``)
and otherwise a constant-200 aiohttp app, in a child process on loopback. Every measurement of
one run goes to that same target.

It measures, each in headless Locust processes of its own:

1. the reference: a FastHttpUser that POSTs a small JSON body to ``/api/v1/events`` in a loop
   with ``constant(0)`` waits, at 32 and 64 users. The best requests/s counts.
2. the driver's maximum: the ``minimal`` scenario with more installs than the lanes can send
   (offered at ``OVERLOAD`` times the reference rate) and a one-hour lag budget, so nothing is
   dropped and every lane always has work. Target: 0.8 of the reference.
3. the driver's highest rate whose p99 schedule lag stays within 50 ms, stepping the installs
   up at a fixed time scale, from 0.1 of the reference to the driver's maximum in steps of 0.1.
   Target: 0.5 of the reference.

Rates are requests/s over a steady window, the slope of Locust's ``Total Request Count`` in
``<prefix>_stats_history.csv``. Schedule lag is computed from the truth ledger: the wall time
an SDK call was sent minus the wall time its simulated moment was due. The benchmark writes the
run's epoch itself (``--epoch-file``), so it knows when each call was due.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sim.scenario import load_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "locustfile.py"

SCENARIO = "minimal"
# Simulated seconds per wall second, and the simulated length, for every driver run: 6 h at
# 1080 makes 20 wall seconds. The minimal scenario's request rate is near flat over its first
# five simulated hours, and falls after that with the time of day.
TIME_SCALE = 1080.0
DURATION = "6h"
# Wall seconds from the epoch to the model's horizon (duration plus the 10 min drain).
RUN_WALL = (6 * 3600 + 600) / TIME_SCALE
# Wall seconds after the horizon that a run which keeps up needs to drain and quit.
END_SLACK = 8.0
# Wall seconds from the run's epoch (its first simulated moment) to the steady window's ends.
WINDOW = (3.0, 17.0)
# Wall seconds between launching Locust and the epoch: Locust and the model start in about 1 s.
EPOCH_LEAD = 3.0
# The run's drain after the horizon; a short one, since the window ends before it.
DRAIN = "10m"
# Nothing may be dropped: every call is sent however late, so the lag is measured, not hidden.
LAG_BUDGET = "1h"

REFERENCE_USERS = (32, 64)
DRIVER_USERS = (32, 64)
# Offered load of the saturation runs, as a multiple of the reference rate.
OVERLOAD = 1.25
# Offered rates of the lag steps, as fractions of the reference rate. Steps above the driver's
# measured maximum are skipped, since no offered rate above it can be sent on schedule.
LAG_STEPS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
LAG_LIMIT_MS = 50.0
# Installs of the calibration run, which measures requests/s per install at TIME_SCALE.
CALIBRATION_INSTALLS = 2000

THROUGHPUT_TARGET = 0.8
LAG_TARGET = 0.5

BARE_LOCUSTFILE = '''\
from locust import FastHttpUser, constant, task

BODY = {"name": "product_viewed", "data": {"product_id": "p-1", "price": 19.9}}


class BareEvents(FastHttpUser):
    """Send one small event after another, with no think time and no model."""

    wait_time = constant(0)

    @task
    def post_event(self):
        self.client.post("/api/v1/events", json=BODY)
'''

NGINX_CONFIG = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # Locust keeps its connections for the whole run.
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location / {{ return 200 '{{}}'; }}
    }}
}}
"""

AIOHTTP_SERVER = """\
import sys
from aiohttp import web


async def handle(request):
    await request.read()
    return web.json_response({})


app = web.Application()
app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


@dataclass
class Target:
    """The constant-200 server every measurement of the run goes to."""

    kind: str
    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@dataclass
class DriverResult:
    """One driver run: its settings and what the steady window showed."""

    installs: int
    users: int
    calls_per_s: float  # SDK calls due in the window and sent, per wall second
    requests_per_s: float  # Locust requests/s in the window
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    ended: bool  # the run reached its horizon and sent every call before Locust's time limit
    cpu_us: float  # CPU time of the Locust process per request, in microseconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the target server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise RuntimeError(f"the target server timed out: no 200 from {url} within {timeout:.0f} s")


def start_target(workdir: Path) -> Target:
    """Start nginx if it is installed, otherwise the aiohttp app, on a free loopback port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    nginx = shutil.which("nginx")

    if nginx:
        nginx_dir = workdir / "nginx"
        nginx_dir.mkdir()
        config = nginx_dir / "nginx.conf"
        config.write_text(NGINX_CONFIG.format(dir=nginx_dir, port=port))
        command = [nginx, "-p", str(nginx_dir), "-e", str(nginx_dir / "error.log")]
        command += ["-c", str(config)]
        kind = "nginx"
    else:
        server = workdir / "constant_200.py"
        server.write_text(AIOHTTP_SERVER)
        command = [sys.executable, str(server), str(port)]
        kind = "aiohttp"

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url + "/health", process)
    except RuntimeError:
        process.kill()
        raise
    return Target(kind, url, process)


def history_rate(prefix: Path, start: float, end: float) -> float:
    """Return requests/s between wall times ``start`` and ``end`` from Locust's stats history.

    Rows are written about once a second with a whole-second timestamp, so the rate is the
    least-squares slope of the aggregated request count over the rows in the window.
    """
    points = []
    with open(f"{prefix}_stats_history.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            stamp = float(row["Timestamp"])
            if row["Name"] == "Aggregated" and start <= stamp <= end:
                points.append((stamp, float(row["Total Request Count"])))
    if len(points) < 3:
        raise RuntimeError(f"only {len(points)} stats rows in the window of {prefix}")
    mean_t = sum(t for t, _ in points) / len(points)
    mean_n = sum(n for _, n in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (n - mean_n) for t, n in points) / spread


def run_locust(command: list[str], timeout: float) -> float:
    """Run one Locust process to its end and return its CPU time (user + system), in seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(
            f"locust exited with code {result.returncode}: {' '.join(command)}\n"
            + result.stderr[-3000:]
        )
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def request_count(prefix: Path) -> int:
    with open(f"{prefix}_stats.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                return int(row["Request Count"])
    raise RuntimeError(f"no Aggregated row in {prefix}_stats.csv")


def measure_reference(
    target: Target, workdir: Path, users: int, seconds: float
) -> tuple[float, float]:
    """Return the bare loop's requests/s, less the run's first 3 s and last 2 s, and its
    CPU time per request in microseconds."""
    locustfile = workdir / "bare_events.py"
    locustfile.write_text(BARE_LOCUSTFILE)
    prefix = workdir / f"bare-{users}"
    started = time.time()
    command = [
        sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{seconds:.0f}s", "--host", target.url,
        "--csv", str(prefix), "--only-summary",
    ]  # fmt: skip
    cpu = run_locust(command, timeout=seconds + 60)
    # Locust needs about a second to import and spawn its users before the run time starts.
    rate = history_rate(prefix, started + 4.0, started + seconds - 2.0)
    return rate, cpu / request_count(prefix) * 1e6


def run_driver(
    target: Target, workdir: Path, installs: int, users: int, *, name: str, to_end: bool
) -> DriverResult:
    """Run the driver on the minimal scenario and measure its steady window.

    With ``to_end`` the run may go on to its horizon and send every call, so the lag record is
    complete. Without it, Locust stops the run shortly after the window.
    """
    run_dir = workdir / name
    run_dir.mkdir()
    scenario = load_scenario(SCENARIO).scenario
    wall_t0 = time.time() + EPOCH_LEAD
    sim_t0 = scenario.clock.start.timestamp()
    epoch = {"wall_t0": wall_t0, "sim_t0": sim_t0, "time_scale": TIME_SCALE}
    epoch_file = run_dir / "epoch.json"
    epoch_file.write_text(json.dumps({"epoch": epoch}))

    # An overloaded run would send its backlog for minutes, so Locust's time limit bounds
    # every run. A run that keeps up stops by itself at its horizon, before that limit.
    if to_end:
        run_time = EPOCH_LEAD + RUN_WALL + END_SLACK
    else:
        run_time = EPOCH_LEAD + WINDOW[1] + 3.0
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{run_time:.0f}s", "--host", target.url,
        "--scenario", SCENARIO, "--run-dir", str(run_dir), "--epoch-file", str(epoch_file),
        "--csv", str(run_dir / "locust"), "--only-summary",
        "--set", f"clock.time_scale={TIME_SCALE:g}", "--set", f"clock.duration={DURATION}",
        "--set", f"clock.drain={DRAIN}", "--set", f"clock.lag_budget={LAG_BUDGET}",
        "--set", f"population.installs={installs}",
    ]  # fmt: skip
    launched = time.monotonic()
    cpu = run_locust(command, timeout=run_time + 90)
    # Locust's run time starts about a second after launch, so a run cut by the limit lasts
    # longer than run_time.
    ended = time.monotonic() - launched < run_time

    window_start, window_end = wall_t0 + WINDOW[0], wall_t0 + WINDOW[1]
    lags_ms = []
    with open(run_dir / "truth-0.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record.get("kind") != "sdk_call" or record.get("status") != "sent":
                continue
            due = wall_t0 + record["at"] / TIME_SCALE
            if window_start <= due < window_end:
                lags_ms.append(max(0.0, (record["sent_wall"] - due) * 1000.0))
    # A call gets its truth record when it leaves its lane. Calls still queued, or not yet
    # made by a model that fell behind, are missing when Locust's limit cut the run short.
    lags_ms.sort()

    def percentile(fraction: float) -> float:
        if not lags_ms:
            return float("nan")
        return lags_ms[min(len(lags_ms) - 1, int(fraction * len(lags_ms)))]

    return DriverResult(
        installs=installs,
        users=users,
        calls_per_s=len(lags_ms) / (window_end - window_start),
        requests_per_s=history_rate(run_dir / "locust", window_start, window_end),
        lag_p50_ms=percentile(0.50),
        lag_p99_ms=percentile(0.99),
        lag_max_ms=lags_ms[-1] if lags_ms else float("nan"),
        ended=ended,
        cpu_us=cpu / request_count(run_dir / "locust") * 1e6,
    )


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} CPUs ({model}), {system}, Python {platform.python_version()}"


def target_version(target: Target) -> str:
    if target.kind == "nginx":
        result = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
        return result.stderr.strip().replace("nginx version: ", "")
    import aiohttp

    return f"aiohttp {aiohttp.__version__}"


HEADER = (
    f"  {'run':<12}{'installs':>9}{'lanes':>6}{'calls/s':>9}{'requests/s':>11}{'ratio':>7}"
    f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'ended':>7}{'CPU us/req':>11}"
)


def print_driver_row(label: str, result: DriverResult, reference: float) -> None:
    print(
        f"  {label:<12}{result.installs:>9}{result.users:>6}{result.calls_per_s:>9.0f}"
        f"{result.requests_per_s:>11.0f}{result.requests_per_s / reference:>7.2f}"
        f"{result.lag_p50_ms:>9.1f}{result.lag_p99_ms:>9.1f}{result.lag_max_ms:>9.0f}"
        f"{'yes' if result.ended else 'no':>7}{result.cpu_us:>11.0f}"
    )


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--seconds", type=float, default=18.0, help="run time of each reference run, in seconds"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one user count (64) per measurement and every other lag step, for a smoke run",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory with every CSV and ledger"
    )
    args = parser.parse_args()

    reference_users = (64,) if args.quick else REFERENCE_USERS
    driver_users = (64,) if args.quick else DRIVER_USERS
    lag_steps = LAG_STEPS[::2] if args.quick else LAG_STEPS

    workdir = Path(tempfile.mkdtemp(prefix="bench-driver-"))
    target = start_target(workdir)
    try:
        print(f"machine: {machine()}")
        print(f"load average (1, 5, 15 min) at start: {load_average()}")
        print(f"target: {target_version(target)} at {target.url}, 1 worker process")
        print(
            f"driver: scenario {SCENARIO}, time_scale {TIME_SCALE:g}, duration {DURATION}, "
            f"lag budget {LAG_BUDGET}, window {WINDOW[0]:g}-{WINDOW[1]:g} wall s after the epoch"
        )
        print()

        # 1. The reference: a bare FastHttpUser loop.
        reference = 0.0
        for users in reference_users:
            rate, cpu_us = measure_reference(target, workdir, users, args.seconds)
            print(f"reference, {users} users: {rate:.0f} requests/s, {cpu_us:.0f} CPU us/request")
            reference = max(reference, rate)
        print()

        # Requests/s per install at TIME_SCALE, to size the offered load of the runs below.
        calibration = run_driver(
            target, workdir, CALIBRATION_INSTALLS, 64, name="calibration", to_end=True
        )
        per_install = calibration.requests_per_s / CALIBRATION_INSTALLS
        print("calibration (offered load per install):")
        print(HEADER)
        print_driver_row("calibration", calibration, reference)
        print()

        # 2. The driver's maximum, with more calls offered than the lanes can send.
        print(f"driver saturated (offered about {OVERLOAD:g} x the reference rate):")
        print(HEADER)
        overload_installs = round(OVERLOAD * reference / per_install)
        saturated = []
        for users in driver_users:
            result = run_driver(
                target, workdir, overload_installs, users, name=f"max-{users}", to_end=False
            )
            saturated.append(result)
            print_driver_row("saturated", result, reference)
        best = max(saturated, key=lambda result: result.requests_per_s)
        print()

        # 3. Step the offered rate up to the maximum. A step passes when every call due in the
        # window was sent and their p99 schedule lag is within the limit. Two failures in a row
        # end it.
        lanes = best.users
        max_ratio = best.requests_per_s / reference
        steps = [fraction for fraction in lag_steps if fraction <= max_ratio]
        print(f"driver lag steps (offered as a fraction of the reference rate, {lanes} lanes):")
        print(HEADER)
        passing = None
        failed = False
        failures = 0
        for fraction in steps:
            installs = round(fraction * reference / per_install)
            result = run_driver(
                target, workdir, installs, lanes, name=f"step-{fraction:g}", to_end=True
            )
            ok = result.ended and result.lag_p99_ms <= LAG_LIMIT_MS
            print_driver_row(f"{fraction:g}x {'pass' if ok else 'FAIL'}", result, reference)
            if ok:
                failures = 0
                if passing is None or result.requests_per_s > passing.requests_per_s:
                    passing = result
            else:
                failed = True
                failures += 1
                if failures == 2:
                    break
        print()

        lag_rate = passing.requests_per_s if passing else 0.0
        lag_ratio = lag_rate / reference
        print(f"load average (1, 5, 15 min) at end: {load_average()}")
        print(f"1. reference, bare FastHttpUser:   {reference:6.0f} requests/s")
        print(
            f"2. driver maximum:                 {best.requests_per_s:6.0f} requests/s, "
            f"ratio {max_ratio:.2f} (target >= {THROUGHPUT_TARGET}: "
            f"{'met' if max_ratio >= THROUGHPUT_TARGET else 'missed'})"
        )
        print(
            f"3. driver with p99 lag <= {LAG_LIMIT_MS:g} ms:  {lag_rate:6.0f} requests/s, "
            f"ratio {lag_ratio:.2f} (target >= {LAG_TARGET}: "
            f"{'met' if lag_ratio >= LAG_TARGET else 'missed'})"
        )
        if not failed:
            # The limit was not reached: it lies between the highest step and the maximum.
            print(
                f"   every lag step up to {steps[-1] if steps else 0:g}x passed, below the maximum "
                f"of {max_ratio:.2f}x, so {lag_ratio:.2f} is a lower bound"
            )
    finally:
        target.stop()
        if args.keep:
            print(f"work directory: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
