"""Benchmark the gateways' world: memory at 100k and 1M recorded pushes, and record() speed.

Run it from the repository root:

    python tests/bench/bench_world.py            # 100k and 1M pushes, about a minute
    python tests/bench/bench_world.py --sizes 20000 200000

Each size runs in its own subprocess, so each peak RSS (VmHWM from /proc, Linux only) belongs to
one run. RSS figures are the sum of the gateway process and the ledger's writer process. A
poller thread plays the Locust workers: it reads every shard's inbox and acknowledges what it
read, as a worker does. The producer stops while the ledger's backlog is above
``--max-backlog`` records, as a wire server under back-pressure would, so the figures measure
what the world keeps, not a queue the test let grow.

What grows between the two sizes is the ledger's retry and duplicate windows, in the writer
process: they keep every apns-id and every FCM token+payload hash of the last minutes until each
reaches its cap (100,000 keys, about 12 MiB), and stay flat after that. The ledger file grows on
disk by about 520 bytes per push. The inbox keeps nothing once a shard is acknowledged, and the
ledger sends a writer that fell behind its backlog in messages of at most ``max_batch`` records,
so no peak depends on how far behind it fell.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sim.formats.epoch import Epoch  # noqa: E402
from sim.formats.tokens import derive_run_key, issue_token  # noqa: E402
from sim.gateways.hooks import Outcome, PushRequest, Service  # noqa: E402
from sim.gateways.run import RunConfig  # noqa: E402
from sim.gateways.world import GatewayWorld  # noqa: E402

SHARDS = 4
GROUPS = 20_000
RUN_KEY = derive_run_key(1)


def _status_kib(field: str, pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _requests(count: int) -> list[PushRequest]:
    """Return ``count`` distinct pushes over APNs and FCM tokens of many groups."""
    requests = []
    now = time.time()
    for number in range(count):
        group = number % GROUPS
        ios = number % 2 == 0
        token = issue_token(RUN_KEY, "ios" if ios else "android", group, 0)
        payload = json.dumps(
            {"aps": {"alert": {"title": "You left something behind", "body": "Your cart"}},
             "cart_id": f"cart-{number}", "link": f"shop://cart/{number}"}
        ).encode()  # fmt: skip
        requests.append(
            PushRequest(
                service=Service.APNS if ios else Service.FCM,
                token=token,
                audience="com.example.shop" if ios else "pushsim-shop",
                headers={"apns-priority": "10", "apns-push-type": "alert"} if ios else {},
                payload=payload,
                connection_id=f"conn-{number % 8}",
                received_at=now,
                message_id=f"id-{number}",
            )
        )
    return requests


def _distinct(template: PushRequest, number: int) -> PushRequest:
    return PushRequest(
        service=template.service,
        token=template.token,
        audience=template.audience,
        headers=template.headers,
        payload=template.payload + b" " * (number % 7) + str(number).encode(),
        connection_id=template.connection_id,
        received_at=time.time(),
        message_id=f"id-{number}",
    )


def _poll(world: GatewayWorld, stop: threading.Event, counts: list[int]) -> None:
    cursors = [0] * SHARDS
    while not stop.is_set():
        idle = True
        for shard in range(SHARDS):
            entries = world.inbox.read(shard, after=cursors[shard], limit=5000)
            if entries:
                idle = False
                cursors[shard] = entries[-1].seq
                world.inbox.ack(shard, cursors[shard])
                counts[shard] += len(entries)
        if idle:
            time.sleep(0.01)


def run_size(size: int, max_backlog: int, use_tracemalloc: bool) -> dict:
    """Record ``size`` pushes through a world whose inbox is polled; return its figures."""
    if use_tracemalloc:
        tracemalloc.start()
    pool = _requests(10_000)
    directory = tempfile.mkdtemp(prefix="bench-world-")
    world = GatewayWorld(Path(directory) / "ledger.sqlite").start()
    epoch = Epoch(wall_t0=time.time(), sim_t0=1_795_000_000.0, time_scale=1440.0)
    world.configure_run(RunConfig(epoch, RUN_KEY, SHARDS, "registry"))
    # The ledger's writer process keeps the retry and duplicate windows, so its memory counts.
    writer = world.ledger.writer_pid
    time.sleep(0.5)  # the writer's start-up imports
    rss_start = _status_kib("VmRSS")
    writer_rss_start = _status_kib("VmRSS", writer)

    stop = threading.Event()
    delivered = [0] * SHARDS
    poller = threading.Thread(target=_poll, args=(world, stop, delivered), daemon=True)
    poller.start()

    started = time.perf_counter()
    recording = 0.0
    for first in range(0, size, 10_000):
        # Every push gets its own apns-id and payload, as in a real run, so the retry and
        # duplicate windows fill up to their caps instead of seeing the same keys again.
        numbers = range(first, min(first + 10_000, size))
        requests = [_distinct(pool[number % len(pool)], number) for number in numbers]
        outcomes = [
            Outcome(200, delivery_id=f"d{number}") if number % 10 else Outcome(410, "Unregistered")
            for number in numbers
        ]
        batch_started = time.perf_counter()
        for request, outcome in zip(requests, outcomes, strict=True):
            world.sink.record(request, outcome)
        recording += time.perf_counter() - batch_started
        while world.ledger.backlog > max_backlog:
            time.sleep(0.005)

    while world.ledger.committed < size:
        time.sleep(0.01)
    written = time.perf_counter() - started
    expected = size - size // 10
    deadline = time.monotonic() + 60
    while sum(delivered) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    poller.join()

    figures = {
        "size": size,
        "record_us": recording / size * 1e6,
        "end_to_end_per_s": size / written,
        "gateway_rss_peak_mib": _status_kib("VmHWM") / 1024,
        "writer_rss_peak_mib": _status_kib("VmHWM", writer) / 1024,
        # The sum of both peaks, an upper bound of the two processes' peak together.
        "rss_start_mib": (rss_start + writer_rss_start) / 1024,
        "rss_end_mib": (_status_kib("VmRSS") + _status_kib("VmRSS", writer)) / 1024,
        "rss_peak_mib": (_status_kib("VmHWM") + _status_kib("VmHWM", writer)) / 1024,
        "inbox_memory_entries": world.inbox.memory_entries(),
        "window_entries": sum(world.ledger.window_entries().values()),
        "delivered": sum(delivered),
        "expected": expected,
        "ledger_mib": os.path.getsize(Path(directory) / "ledger.sqlite") / 2**20,
    }
    if use_tracemalloc:
        current, peak = tracemalloc.get_traced_memory()
        figures["python_current_mib"] = current / 2**20
        figures["python_peak_mib"] = peak / 2**20
    world.close()
    return figures


def record_burst(count: int) -> dict:
    """Time ``count`` unpaced record() calls, then how long the writer takes to commit them."""
    pool = _requests(10_000)
    outcomes = [Outcome(200, delivery_id=f"b{number}") for number in range(count)]
    directory = tempfile.mkdtemp(prefix="bench-burst-")
    world = GatewayWorld(Path(directory) / "ledger.sqlite").start()
    epoch = Epoch(wall_t0=time.time(), sim_t0=1_795_000_000.0, time_scale=1440.0)
    world.configure_run(RunConfig(epoch, RUN_KEY, SHARDS, "registry"))

    started = time.perf_counter()
    for number, outcome in enumerate(outcomes):
        world.sink.record(pool[number % len(pool)], outcome)
    recorded = time.perf_counter() - started
    while world.ledger.committed < count:
        time.sleep(0.005)
    committed = time.perf_counter() - started
    world.close()
    return {"burst": count, "record_per_s": count / recorded, "commit_per_s": count / committed}


def _child(arguments: list[str]) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, *arguments], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[100_000, 1_000_000],
                        help="the small and the large number of pushes")  # fmt: skip
    parser.add_argument("--max-backlog", type=int, default=20_000,
                        help="records queued for the ledger before the producer waits")  # fmt: skip
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also trace Python allocations (about 2x slower)")  # fmt: skip
    parser.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-burst", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()

    if options.child_size:
        print(json.dumps(run_size(options.child_size, options.max_backlog, options.tracemalloc)))
        return
    if options.child_burst:
        print(json.dumps(record_burst(options.child_burst)))
        return

    extra = ["--max-backlog", str(options.max_backlog)]
    if options.tracemalloc:
        extra.append("--tracemalloc")
    small, large = (_child(["--child-size", str(size), *extra]) for size in options.sizes)
    burst = _child(["--child-burst", "200000"])

    for figures in (small, large):
        print(
            f"{figures['size']:>9,} pushes: peak RSS {figures['rss_peak_mib']:.1f} MiB "
            f"(start {figures['rss_start_mib']:.1f}, end {figures['rss_end_mib']:.1f}; "
            f"gateway {figures['gateway_rss_peak_mib']:.1f}, "
            f"writer {figures['writer_rss_peak_mib']:.1f}), "
            f"inbox in memory {figures['inbox_memory_entries']}, "
            f"retry+duplicate keys {figures['window_entries']:,}, "
            f"delivered {figures['delivered']}/{figures['expected']}, "
            f"ledger file {figures['ledger_mib']:.0f} MiB, "
            f"{figures['end_to_end_per_s']:,.0f} pushes/s committed"
        )
        if "python_peak_mib" in figures:
            print(
                f"{'':>17} Python heap: now {figures['python_current_mib']:.1f} MiB, "
                f"peak {figures['python_peak_mib']:.1f} MiB"
            )
    growth = (large["rss_peak_mib"] - large["rss_start_mib"]) / max(
        small["rss_peak_mib"] - small["rss_start_mib"], 1e-9
    )
    print(f"peak RSS ratio {large['size']:,} / {small['size']:,}: "
          f"{large['rss_peak_mib'] / small['rss_peak_mib']:.2f}x "
          f"(growth above the start: {growth:.2f}x)")  # fmt: skip
    print(
        f"record(): {burst['record_per_s']:,.0f} calls/s unpaced; the writer commits "
        f"{burst['commit_per_s']:,.0f} rows/s ({burst['burst']:,} pushes)"
    )


if __name__ == "__main__":
    main()
