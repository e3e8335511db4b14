"""Throughput of the backend's Track API intake against a constant aiohttp app, both under wrk.

Run it from the repository root:

    python tests/bench/bench_backend.py                  # one round: about 45 s
    python tests/bench/bench_backend.py --rounds 3 --duration 15

Needs wrk (Debian/Ubuntu: ``apt-get install wrk``).

Each server runs alone in its own child process on 127.0.0.1, and one wrk process drives it
with the same settings (``-t2 -c64`` by default, a warm-up run first). The backend starts as
``python -m sim.backend`` does, with a fresh SQLite file and its credentials in environment
variables. The reference is an aiohttp app in this file that responds 200 ``{}`` to every
request without reading it. Both get the same requests from one wrk Lua script: 80% person
events (``POST /api/v1/customers/{id}/events``), 10% anonymous events (``POST /api/v1/events``)
and 10% identify calls (``PUT /api/v1/customers/{id}``), all with HTTP Basic auth. Every event
carries a new ULID-like id, so the backend's dedupe check never short-circuits a write.

The script prints both rates, their ratio (target 0.4), p50 and p99 latency, the responses
that were not 2xx or 3xx, and the server CPU time per request, which includes the backend's
child processes (its store writer). After each backend run it reads
the backend's ``/metrics`` for its responses by status and counts the events in the SQLite
file, which must hold every event that got a 200.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TARGET_RATIO = 0.4
SITE_ID = "bench-site"
API_KEY = "bench-key"
STARTUP_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 30

# The backend's startup log line, and the one the constant server prints.
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")

# wrk runs this once per thread (each thread has its own Lua state) and once more for done().
# Customer and anonymous ids come from one pool, so "anon-N" is the device that "cust-N"
# identifies from and an identify stitches that anonymous profile into the person.
LUA_SCRIPT = """
local auth = "%(auth)s"
local pool = %(pool)d
local names = {"screen_viewed", "product_viewed", "added_to_cart", "checkout_started"}
local crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  run_tag = tonumber(args[1]) or 0
  sequence = 0
  math.randomseed(os.time() * 100 + thread_number)
  headers = {["Authorization"] = auth, ["Content-Type"] = "application/json"}
end

local function base32(value, width)
  local digits = {}
  for position = width, 1, -1 do
    local digit = value %% 32
    digits[position] = crockford:sub(digit + 1, digit + 1)
    value = math.floor(value / 32)
  end
  return table.concat(digits)
end

-- A ULID-shaped id: 10 base32 characters of time in ms, then 16 that contain the run tag, the
-- thread number, the thread's sequence number and random bits, so no two requests share an id.
local function ulid(seconds)
  sequence = sequence + 1
  return base32(seconds * 1000 + sequence %% 1000, 10) .. base32(run_tag, 2)
    .. base32(thread_number, 2) .. base32(sequence, 6) .. base32(math.random(0, 1073741823), 6)
end

function request()
  local now = os.time()
  local person = math.random(1, pool)
  local roll = math.random(1, 100)
  if roll <= 80 then
    local body = string.format(
      '{"name":"%%s","id":"%%s","timestamp":%%d,'
        .. '"data":{"product_id":"p-%%d","price":%%d.99,"currency":"EUR","screen":"catalog"}}',
      names[math.random(1, #names)], ulid(now), now, math.random(1, 5000),
      math.random(1, 200))
    return wrk.format("POST", "/api/v1/customers/cust-" .. person .. "/events", headers, body)
  elseif roll <= 90 then
    local body = string.format(
      '{"name":"app_opened","id":"%%s","anonymous_id":"anon-%%d","timestamp":%%d,'
        .. '"data":{"source":"push"}}',
      ulid(now), person, now)
    return wrk.format("POST", "/api/v1/events", headers, body)
  else
    local body = string.format(
      '{"email":"cust-%%d@example.com","first_name":"Ada","plan":"pro",'
        .. '"created_at":%%d,"anonymous_id":"anon-%%d"}',
      person, now, person)
    return wrk.format("PUT", "/api/v1/customers/cust-" .. person, headers, body)
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'RESULT {"requests":%%d,"duration_us":%%d,"connect_errors":%%d,"read_errors":%%d,'
      .. '"write_errors":%%d,"timeouts":%%d,"status_errors":%%d,'
      .. '"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.timeout, errors.status, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""


def serve_constant() -> None:
    """Serve 200 ``{}`` to every request on a free loopback port until SIGTERM or SIGINT."""
    import asyncio

    from aiohttp import web

    body = b"{}"

    async def respond(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def run() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", respond)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"constant server listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)

        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stopped.set)
        await stopped.wait()
        await runner.cleanup()

    asyncio.run(run())


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The fields after the command name, which may itself contain spaces and brackets.
    return text.rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float | None:
    """Return the user plus system CPU seconds of process ``pid``, or None off Linux."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # After the command name, utime and stime are fields 12 and 13 (in clock ticks).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    """Return the pids of every live process below ``pid``, such as the store's writer."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            # The parent's pid is the second field after the command name.
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found.extend(children)
        frontier.extend(children)
    return found


def _tree_cpu_seconds(pid: int, children: list[int]) -> tuple[float, float] | None:
    """Return the CPU seconds of ``pid`` and the sum over ``children``, or None off Linux."""
    own = _cpu_seconds(pid)
    if own is None:
        return None
    return own, sum(_cpu_seconds(child) or 0.0 for child in children)


def _log_tail(log_path: Path) -> str:
    # The temporary directory and its logs are deleted when the script exits.
    return log_path.read_text(errors="replace")[-2000:]


class ChildServer:
    """A server in a child process whose stderr goes to ``log_path``."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._log
        )
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            match = LISTENING.search(self.log_path.read_text(errors="replace"))
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"server did not report its port within {STARTUP_TIMEOUT_SECONDS} s:\n"
            f"{_log_tail(self.log_path)}"
        )

    def stop(self) -> int | None:
        """Send SIGTERM, wait for a clean exit and return the exit code (None if killed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
                self._log.close()
                return None
        self._log.close()
        return self.process.returncode


def _wrk_version() -> str:
    # wrk prints its version in the usage text, to stdout, and exits 1.
    output = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    match = re.search(r"^wrk (\S+)", output.stdout + output.stderr, re.MULTILINE)
    return f"wrk {match.group(1)}" if match else "wrk (version unknown)"


def _run_wrk(port: int, script: Path, arguments: argparse.Namespace, seconds: int, tag: int):
    command = [
        "wrk",
        f"-t{arguments.threads}",
        f"-c{arguments.connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
        "--",
        str(tag),
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^RESULT (\{.*\})$", finished.stdout, re.MULTILINE)
    if finished.returncode != 0 or match is None:
        raise RuntimeError(
            f"wrk failed with exit code {finished.returncode}:\n{finished.stdout}{finished.stderr}"
        )
    result = json.loads(match.group(1))
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    result["command"] = " ".join(command[:-2])
    return result


def _backend_responses(port: int) -> tuple[dict[str, int], int, float | None]:
    """Read the Track API responses by status, the 200s to event routes and writes per commit.

    The mean writes per commit cover the whole life of the backend, warm-up included.
    """
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    batches = dict(re.findall(r"^pushsim_backend_write_batch_size_(sum|count) (\d+)$", text, re.M))
    mean_batch = None
    if int(batches.get("count", 0)):
        mean_batch = int(batches["sum"]) / int(batches["count"])
    statuses: dict[str, int] = {}
    acknowledged_events = 0
    for route, status, count in re.findall(
        r'^pushsim_backend_requests_total\{route="(/api/v1/[^"]*)",method="[A-Z]+",'
        r'status="(\d+)"\} (\d+)$',
        text,
        re.MULTILINE,
    ):
        statuses[status] = statuses.get(status, 0) + int(count)
        if route.endswith("/events") and status == "200":
            acknowledged_events += int(count)
    return statuses, acknowledged_events, mean_batch


def _stored_events(db_path: Path) -> int:
    connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        connection.close()


def _measure(kind: str, work: Path, script: Path, arguments: argparse.Namespace, tag: int):
    """Start one server, warm it up, load it with wrk, stop it and return the figures."""
    env = dict(os.environ)
    log_path = work / f"{kind}-{tag}.log"
    db_path = work / f"backend-{tag}.db"
    if kind == "backend":
        env["PUSHSIM_TRACK_CREDENTIALS"] = f"{SITE_ID}:{API_KEY}"
        env["PUSHSIM_CDP_WRITE_KEYS"] = "bench-write-key"
        env.pop("PUSHSIM_CONTROL_TOKEN", None)
        command = [sys.executable, "-m", "sim.backend", "--db", str(db_path), "--port", "0"]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-constant"]

    server = ChildServer(command, log_path, env)
    try:
        _run_wrk(server.port, script, arguments, arguments.warmup, tag * 2)
        # The server's CPU counts its child processes too: the backend's store writer.
        children = _descendants(server.process.pid)
        cpu_before = _tree_cpu_seconds(server.process.pid, children)
        result = _run_wrk(server.port, script, arguments, arguments.duration, tag * 2 + 1)
        cpu_after = _tree_cpu_seconds(server.process.pid, children)
        result["cpu_us"] = result["children_cpu_us"] = None
        if cpu_before is not None and cpu_after is not None and result["requests"]:
            own = cpu_after[0] - cpu_before[0]
            below = cpu_after[1] - cpu_before[1]
            result["cpu_us"] = (own + below) / result["requests"] * 1e6
            result["children_cpu_us"] = below / result["requests"] * 1e6
        if kind == "backend":
            # These include the warm-up run's requests.
            responses = _backend_responses(server.port)
            result["statuses"], result["acknowledged_events"], result["mean_batch"] = responses
    finally:
        exit_code = server.stop()
    if exit_code != 0:
        raise RuntimeError(f"{kind} exited with code {exit_code}:\n{_log_tail(log_path)}")
    if kind == "backend":
        result["stored_events"] = _stored_events(db_path)
    return result


def _describe_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _print_run(kind: str, number: int, run: dict) -> None:
    cpu = f"{run['cpu_us']:.0f} us CPU/request" if run["cpu_us"] else "CPU n/a"
    if run.get("children_cpu_us"):
        cpu += f" ({run['children_cpu_us']:.0f} of them in child processes)"
    errors = run["connect_errors"] + run["read_errors"] + run["write_errors"] + run["timeouts"]
    print(
        f"  {kind:8s} round {number}: {run['rate']:7.0f} req/s, "
        f"p50 {run['p50_us'] / 1000:6.2f} ms, p99 {run['p99_us'] / 1000:6.2f} ms, {cpu}, "
        f"{run['requests']} requests, {run['status_errors']} non-2xx/3xx, "
        f"{errors} socket errors"
    )
    if "statuses" in run:
        print(
            f"           backend responses by status (warm-up included): {run['statuses']}, "
            f"{run['acknowledged_events']} events acknowledged, "
            f"{run['stored_events']} events in SQLite, "
            f"{run['mean_batch'] or 0:.1f} writes per commit"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds of each measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of each warm-up run")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternating rounds per server; the best rate of each counts (default 1)",
    )
    parser.add_argument(
        "--pool", type=int, default=100_000, help="distinct customer ids in the request mix"
    )
    parser.add_argument("--serve-constant", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()

    if arguments.serve_constant:
        serve_constant()
        return 0

    if shutil.which("wrk") is None:
        print(
            "wrk not found: install it with `apt-get install wrk` (Debian/Ubuntu) "
            "or `brew install wrk` (macOS)",
            file=sys.stderr,
        )
        return 2

    auth = "Basic " + base64.b64encode(f"{SITE_ID}:{API_KEY}".encode()).decode()
    results: dict[str, list[dict]] = {"constant": [], "backend": []}
    with tempfile.TemporaryDirectory(prefix="pushsim-bench-backend-") as directory:
        work = Path(directory)
        script = work / "mix.lua"
        script.write_text(LUA_SCRIPT % {"auth": auth, "pool": arguments.pool})
        for number in range(arguments.rounds):
            for kind in ("constant", "backend"):
                results[kind].append(_measure(kind, work, script, arguments, number + 1))

    command = results["backend"][0]["command"]
    print(
        f"python {platform.python_version()}, {_wrk_version()}, {os.cpu_count()} CPUs "
        f"({_describe_cpu()}), warm-up {arguments.warmup} s, then: {command}"
    )
    for kind, runs in results.items():
        for number, run in enumerate(runs, 1):
            _print_run(kind, number, run)

    best = {kind: max(runs, key=lambda run: run["rate"]) for kind, runs in results.items()}
    ratio = best["backend"]["rate"] / best["constant"]["rate"]
    print(f"constant aiohttp app : {best['constant']['rate']:7.0f} req/s")
    print(f"backend intake       : {best['backend']['rate']:7.0f} req/s")
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"ratio                : {ratio:.2f} (target >= {TARGET_RATIO}: {verdict})")

    cpu = {kind: [run["cpu_us"] for run in runs if run["cpu_us"]] for kind, runs in results.items()}
    if cpu["constant"] and cpu["backend"]:
        constant_cpu = min(cpu["constant"])
        backend_cpu = min(cpu["backend"])
        print(
            f"server CPU           : constant {constant_cpu:.0f} us/request, backend "
            f"{backend_cpu:.0f} us/request, ratio {constant_cpu / backend_cpu:.2f}"
        )

    failed = sum(
        run["status_errors"] + run["connect_errors"] + run["read_errors"] + run["timeouts"]
        for runs in results.values()
        for run in runs
    )
    if failed:
        print(f"{failed} requests failed or got a non-2xx/3xx response", file=sys.stderr)
        return 1
    # Requests still in flight when /metrics was read can add events, never remove them.
    lost = [run for run in results["backend"] if run["stored_events"] < run["acknowledged_events"]]
    if lost:
        for run in lost:
            print(
                f"the SQLite file contains {run['stored_events']} events, but the backend "
                f"acknowledged {run['acknowledged_events']}: acknowledged writes were lost",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
