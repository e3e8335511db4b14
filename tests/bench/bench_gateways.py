"""Throughput of the mock APNs gateway against a bare h2 server, both driven by h2load.

Run: ``python tests/bench/bench_gateways.py [--requests N] [--rounds R] [--breakdown]``.
Needs h2load (Debian/Ubuntu: ``apt-get install nghttp2-client``).

Each server runs alone in a child process and listens for h2c on loopback. Eight h2load
processes of ``-c 1 -m 16`` drive it at once. Against the gateway every request carries a
distinct issued device token, a provider token, a topic and a push type, so the whole rule set
runs. Each h2load process reads its own URI list, as long as its ``-n``, and no token appears
twice in a run, its warm-up included. The bare server responds 200 to everything, with the same
``H2Configuration``.

The gateway runs in two configurations. ``gateway`` has the open token policy and a counting
sink. ``world`` runs inside a ``GatewayWorld`` with a posted run: each token is checked by its
HMAC under the run key, every push is written to a SQLite ledger in a temporary directory, and
the world's hooks keep the gauges. The script prints each rate and its ratio to the bare server
(target 0.7). It also prints the server CPU time per request, over all threads of the server
process plus the ledger's writer process, counted once the ledger has committed every push. It
varies less than the rates when other processes load the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from h2.connection import H2Connection  # noqa: E402
from h2.events import DataReceived, StreamEnded  # noqa: E402
from h2.exceptions import ProtocolError  # noqa: E402

from sim.gateways.apns_server import H2_CONFIG  # noqa: E402

PROCESSES = 8
KINDS = ("bare", "gateway", "world")
# With --breakdown: the gateway with one part of the world at a time.
PARTS = {
    "world-tokens": "registry token policy only",
    "world-ledger": "ledger sink only",
    "world-hooks": "gauges and fault polling only",
}
STREAMS_PER_CONNECTION = 16
PAYLOAD = b'{"aps":{"alert":{"title":"Your cart","body":"is waiting"}},"cart_id":"c-1"}'
TOPIC = "com.example.shop"


class BareH2Protocol(asyncio.Protocol):
    """The reference: an h2 server that responds 200 to every request and does nothing else."""

    def connection_made(self, transport):
        self.transport = transport
        self.h2 = H2Connection(H2_CONFIG)
        self.h2.initiate_connection()
        transport.write(self.h2.data_to_send())

    def data_received(self, data):
        try:
            events = self.h2.receive_data(data)
        except ProtocolError:
            self.transport.write(self.h2.data_to_send())
            self.transport.close()
            return
        for event in events:
            if isinstance(event, DataReceived) and event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                self.h2.send_headers(event.stream_id, [(b":status", b"200")], end_stream=True)
        self.transport.write(self.h2.data_to_send())


class CountingSink:
    """Count responses by status, to check that every request was accepted, then pass them on."""

    def __init__(self, forward=None) -> None:
        self.counts: dict[int, int] = {}
        self.forward = forward

    def record(self, request, outcome) -> None:
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        if self.forward is not None:
            self.forward.record(request, outcome)


def _world(work: Path, run_key: bytes):
    """Return a started GatewayWorld with a posted run, its ledger in ``work``."""
    from sim.formats.epoch import Epoch
    from sim.gateways.run import RunConfig
    from sim.gateways.world import GatewayWorld

    world = GatewayWorld(work / f"deliveries-{os.getpid()}.sqlite", topic=TOPIC).start()
    epoch = Epoch(wall_t0=time.time(), sim_t0=time.time(), time_scale=1.0)
    world.configure_run(RunConfig(epoch, run_key, 4, "registry", TOPIC, ""))
    return world


def _serve(kind: str, work_dir: str, run_key: bytes, ready, stop, backlog) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink = CountingSink()
        world = None
        if kind == "bare":
            server = await loop.create_server(BareH2Protocol, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
        else:
            from sim.gateways import pki
            from sim.gateways.apns_auth import ApnsAuth
            from sim.gateways.apns_rules import ApnsRules
            from sim.gateways.apns_server import ApnsGateway
            from sim.gateways.hooks import Service

            credentials = pki.ensure_credentials(Path(work_dir) / "pki")
            options = {}
            hooks = None
            if kind.startswith("world"):
                world = _world(Path(work_dir), run_key)
            if kind in ("world", "world-ledger"):
                sink.forward = world.sink
            if kind in ("world", "world-tokens"):
                options = {"tokens": world.token_policy(Service.APNS), "faults": world.fault_policy}
            if kind in ("world", "world-hooks"):
                hooks = world.hooks(Service.APNS)
            rules = ApnsRules(
                auth=ApnsAuth.from_credentials(credentials),
                sink=sink,
                topics={credentials.apns_team_id: frozenset({TOPIC})},
                **options,
            )
            gateway = ApnsGateway(rules, hooks=hooks)
            port = await gateway.start()
        # The parent reads the ledger writer's CPU time from /proc by its process id.
        writer_pid = world.ledger.writer_pid if world is not None else None
        ready.put({"port": port, "writer_pid": writer_pid})
        while not stop.is_set():
            backlog.value = world.ledger.backlog if world is not None else 0
            await asyncio.sleep(0.05)

        report = {"counts": sink.counts}
        if world is not None:
            world.close()
            report["ledger_rows"] = world.ledger.committed
            report["ledger_errors"] = world.ledger.write_errors
        ready.put(json.dumps(report))

    asyncio.run(main())


def _h2load_version() -> str:
    output = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout
    return output.strip().splitlines()[0] if output else "unknown"


# Group ids not yet used in this run. Each URI list takes the next ones, so no device token is
# sent twice, whatever the list lengths.
_unused_groups = itertools.count(0)


def _write_inputs(directory: Path, port: int, requests: int, run_key: bytes) -> list[Path]:
    """Write one URI list of ``requests`` distinct issued tokens per h2load process."""
    from sim.formats.tokens import issue_token

    lists = []
    for _ in range(PROCESSES):
        groups = list(itertools.islice(_unused_groups, requests))
        path = directory / f"uris-{port}-{groups[0]}.txt"
        lines = (
            f"http://127.0.0.1:{port}/3/device/{issue_token(run_key, 'ios', group, 0)}\n"
            for group in groups
        )
        path.write_text("".join(lines))
        lists.append(path)
    return lists


def _drive(port: int, requests: int, headers: list[str], work: Path, run_key: bytes) -> dict:
    payload = work / "payload.json"
    payload.write_bytes(PAYLOAD)
    uri_lists = _write_inputs(work, port, requests, run_key)
    for uri_list in uri_lists:
        # h2load cycles through a list shorter than -n, which would repeat tokens.
        count = sum(1 for _ in uri_list.open())
        if count < requests:
            raise RuntimeError(
                f"{uri_list} has {count} URIs for -n {requests}: write at least -n URIs per list"
            )
    commands = []
    for uri_list in uri_lists:
        command = [
            "h2load",
            "-c",
            "1",
            "-m",
            str(STREAMS_PER_CONNECTION),
            "-n",
            str(requests),
            "-i",
            str(uri_list),
            "-d",
            str(payload),
        ]
        for header in headers:
            command += ["-H", header]
        commands.append(command)

    began = time.perf_counter()
    runs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for c in commands
    ]
    outputs = [run.communicate()[0] for run in runs]
    elapsed = time.perf_counter() - began

    succeeded = 0
    failed = 0
    for output in outputs:
        match = re.search(
            r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, "
            r"(\d+) failed",
            output,
        )
        if match is None:
            raise RuntimeError(f"could not read h2load output:\n{output}")
        succeeded += int(match.group(1))
        failed += int(match.group(2))
    codes = re.findall(
        r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", "".join(outputs)
    )
    non_2xx = sum(int(c[2]) + int(c[3]) for c in codes)
    return {
        "rate": succeeded / elapsed,
        "succeeded": succeeded,
        "failed": failed,
        "non_2xx": non_2xx,
        "seconds": elapsed,
    }


def _cpu_seconds(pid: int) -> float | None:
    """Return the user plus system CPU seconds of process ``pid``, or None off Linux."""
    path = f"/proc/{pid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name, utime and stime are fields 12 and 13 (in clock ticks).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for_ledger(backlog, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    time.sleep(0.1)  # one update of the server's figure
    while backlog.value > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the ledger still had {backlog.value} pushes after {timeout} s")
        time.sleep(0.02)


def _measure(kind: str, requests: int, headers: list[str], work: Path, run_key: bytes) -> dict:
    ready = multiprocessing.Queue()
    stop = multiprocessing.Event()
    # Pushes the ledger has not yet committed, as the server last saw them.
    backlog = multiprocessing.Value("q", 0)
    server = multiprocessing.Process(
        target=_serve, args=(kind, str(work), run_key, ready, stop, backlog)
    )
    server.start()
    try:
        started = ready.get(timeout=30)
        port, writer_pid = started["port"], started["writer_pid"]
        # A short warm-up so every server is measured hot.
        _drive(port, max(requests // 10, 100), headers, work, run_key)
        cpu_before = _cpu_seconds(server.pid)
        writer_before = _cpu_seconds(writer_pid) if writer_pid else 0.0
        result = _drive(port, requests, headers, work, run_key)
        # The ledger writes after the response, so its CPU counts only once it has caught up.
        _wait_for_ledger(backlog)
        cpu_after = _cpu_seconds(server.pid)
        writer_after = _cpu_seconds(writer_pid) if writer_pid else 0.0
        result["cpu_us"] = result["writer_cpu_us"] = None
        measured = None not in (cpu_before, cpu_after, writer_before, writer_after)
        if measured and result["succeeded"]:
            writer_cpu = writer_after - writer_before
            result["cpu_us"] = (cpu_after - cpu_before + writer_cpu) / result["succeeded"] * 1e6
            if writer_pid:
                result["writer_cpu_us"] = writer_cpu / result["succeeded"] * 1e6
        stop.set()
        report = json.loads(ready.get(timeout=60))
        result["server_counts"] = report["counts"]
        result["ledger_rows"] = report.get("ledger_rows")
        result["ledger_errors"] = report.get("ledger_errors")
    finally:
        stop.set()
        server.join(timeout=10)
        if server.is_alive():
            server.terminate()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=int, default=4000, help="requests per h2load process (default 4000)"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also measure the gateway with each part of the world alone: "
        + ", ".join(f"{kind} ({note})" for kind, note in PARTS.items()),
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternating rounds per server; the best rate counts (default 2)",
    )
    args = parser.parse_args()

    if shutil.which("h2load") is None:
        print(
            "h2load not found: install it with `apt-get install nghttp2-client` "
            "(Debian/Ubuntu) or `brew install nghttp2` (macOS)",
            file=sys.stderr,
        )
        return 2

    from sim.formats.tokens import derive_run_key
    from sim.gateways import pki

    run_key = derive_run_key(2026)
    with tempfile.TemporaryDirectory(prefix="pushsim-bench-") as directory:
        work = Path(directory)
        credentials = pki.ensure_credentials(work / "pki")
        import jwt

        token = jwt.encode(
            {"iss": credentials.apns_team_id, "iat": int(time.time())},
            credentials.apns_key.read_text(),
            algorithm="ES256",
            headers={"kid": credentials.apns_key_id},
        )
        headers = [
            f"authorization: bearer {token}",
            f"apns-topic: {TOPIC}",
            "apns-push-type: alert",
            "apns-priority: 10",
        ]

        kinds = KINDS + tuple(PARTS) if args.breakdown else KINDS
        results: dict[str, list[dict]] = {kind: [] for kind in kinds}
        for _ in range(args.rounds):
            for kind in kinds:
                results[kind].append(_measure(kind, args.requests, headers, work, run_key))

    print(
        f"python {platform.python_version()}, {_h2load_version()}, {os.cpu_count()} CPUs, "
        f"{PROCESSES} h2load processes x -c 1 -m {STREAMS_PER_CONNECTION} "
        f"-n {args.requests}, h2c on loopback"
    )
    best = {}
    for kind, runs in results.items():
        for number, run in enumerate(runs, 1):
            cpu = f"{run['cpu_us']:.0f} us CPU/request" if run["cpu_us"] else "CPU n/a"
            ledger = ""
            if run["ledger_rows"] is not None:
                ledger = f", ledger {run['ledger_rows']} rows, {run['ledger_errors']} errors"
            if run["writer_cpu_us"] is not None:
                ledger += f", ledger writer {run['writer_cpu_us']:.0f} us CPU/request"
            print(
                f"  {kind:12s} round {number}: {run['rate']:9.0f} req/s, {cpu} "
                f"({run['succeeded']} succeeded, {run['failed']} failed, "
                f"{run['non_2xx']} non-2xx, {run['seconds']:.2f} s, "
                f"server saw {run['server_counts'] or 'n/a'}{ledger})"
            )
        best[kind] = max(run["rate"] for run in runs)
    print(f"bare h2 server     : {best['bare']:9.0f} req/s")
    labels = {
        "gateway": "APNs gateway       ",
        "world": "APNs gateway, world",
    }
    notes = {
        "gateway": "open token policy, counting sink",
        "world": "registry HMAC check, SQLite ledger, gauges",
    }
    for kind, label in labels.items():
        ratio = best[kind] / best["bare"]
        print(f"{label}: {best[kind]:9.0f} req/s, ratio {ratio:.2f} ({notes[kind]})")
    print("target ratio       : >= 0.70")

    # Server CPU per request is less sensitive than the rate to other load on the machine.
    cpu = {kind: [run["cpu_us"] for run in runs if run["cpu_us"]] for kind, runs in results.items()}
    if all(cpu.values()):
        bare_cpu = min(cpu["bare"])
        for kind in results:
            if kind == "bare":
                continue
            kind_cpu = min(cpu[kind])
            print(
                f"server CPU {kind:12s}: bare {bare_cpu:.0f} us/request, {kind} {kind_cpu:.0f} "
                f"us/request, ratio {bare_cpu / kind_cpu:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
