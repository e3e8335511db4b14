"""Throughput of the mock APNs gateway against a bare h2 server, both driven by h2load.

Run: ``python tests/bench/bench_gateways.py [--requests N] [--rounds R]``. Needs h2load
(Debian/Ubuntu: ``apt-get install nghttp2-client``).

Each server runs alone in a child process and listens for h2c on loopback. Eight h2load
processes of ``-c 1 -m 16`` drive it at once. Against the gateway every request carries a
distinct issued device token (each process reads its own URI list), a provider token, a topic
and a push type, so the whole rule set runs. The bare server responds 200 to everything, with
the same ``H2Configuration``. The script prints both rates and their ratio (target 0.7),
and the server CPU time per request, which varies less than the rates when other processes
load the machine.
"""

from __future__ import annotations

import argparse
import asyncio
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
    """Count responses by status, to check that every request was accepted."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def record(self, request, outcome) -> None:
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1


def _serve(kind: str, credentials_dir: str, ready, stop) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink = CountingSink()
        if kind == "bare":
            server = await loop.create_server(BareH2Protocol, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
        else:
            from sim.gateways import pki
            from sim.gateways.apns_auth import ApnsAuth
            from sim.gateways.apns_rules import ApnsRules
            from sim.gateways.apns_server import ApnsGateway

            credentials = pki.ensure_credentials(credentials_dir)
            rules = ApnsRules(
                auth=ApnsAuth.from_credentials(credentials),
                sink=sink,
                topics={credentials.apns_team_id: frozenset({TOPIC})},
            )
            gateway = ApnsGateway(rules)
            port = await gateway.start()
        ready.put(port)
        while not stop.is_set():
            await asyncio.sleep(0.05)
        ready.put(json.dumps(sink.counts))

    asyncio.run(main())


def _h2load_version() -> str:
    output = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout
    return output.strip().splitlines()[0] if output else "unknown"


def _write_inputs(directory: Path, port: int, requests: int, run_key: bytes) -> list[Path]:
    from sim.formats.tokens import issue_token

    lists = []
    for process in range(PROCESSES):
        path = directory / f"uris-{port}-{process}.txt"
        first = process * requests
        lines = (
            f"http://127.0.0.1:{port}/3/device/{issue_token(run_key, 'ios', group, 0)}\n"
            for group in range(first, first + requests)
        )
        path.write_text("".join(lines))
        lists.append(path)
    return lists


def _drive(port: int, requests: int, headers: list[str], work: Path, run_key: bytes) -> dict:
    payload = work / "payload.json"
    payload.write_bytes(PAYLOAD)
    uri_lists = _write_inputs(work, port, requests, run_key)
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
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name, utime and stime are fields 12 and 13 (in clock ticks).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(kind: str, requests: int, headers: list[str], work: Path, run_key: bytes) -> dict:
    ready = multiprocessing.Queue()
    stop = multiprocessing.Event()
    server = multiprocessing.Process(target=_serve, args=(kind, str(work / "pki"), ready, stop))
    server.start()
    try:
        port = ready.get(timeout=30)
        # A short warm-up so both servers are measured hot.
        _drive(port, max(requests // 10, 100), headers, work, run_key)
        cpu_before = _cpu_seconds(server.pid)
        result = _drive(port, requests, headers, work, run_key)
        cpu_after = _cpu_seconds(server.pid)
        result["cpu_us"] = None
        if cpu_before is not None and cpu_after is not None and result["succeeded"]:
            result["cpu_us"] = (cpu_after - cpu_before) / result["succeeded"] * 1e6
        stop.set()
        result["server_counts"] = json.loads(ready.get(timeout=10))
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

        results: dict[str, list[dict]] = {"bare": [], "gateway": []}
        for _ in range(args.rounds):
            for kind in ("bare", "gateway"):
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
            print(
                f"  {kind:8s} round {number}: {run['rate']:9.0f} req/s, {cpu} "
                f"({run['succeeded']} succeeded, {run['failed']} failed, "
                f"{run['non_2xx']} non-2xx, {run['seconds']:.2f} s, "
                f"server saw {run['server_counts'] or 'n/a'})"
            )
        best[kind] = max(run["rate"] for run in runs)
    ratio = best["gateway"] / best["bare"]
    print(f"bare h2 server : {best['bare']:9.0f} req/s")
    print(f"APNs gateway   : {best['gateway']:9.0f} req/s (full rules, distinct tokens)")
    print(f"ratio          : {ratio:.2f} (target >= 0.70)")

    # Server CPU per request is less sensitive than the rate to other load on the machine.
    cpu = {kind: [run["cpu_us"] for run in runs if run["cpu_us"]] for kind, runs in results.items()}
    if cpu["bare"] and cpu["gateway"]:
        bare_cpu = min(cpu["bare"])
        gateway_cpu = min(cpu["gateway"])
        print(
            f"server CPU     : bare {bare_cpu:.0f} us/request, gateway {gateway_cpu:.0f} "
            f"us/request, ratio {bare_cpu / gateway_cpu:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
