"""How late the journey engine sends when many cart-recovery runs fall due at once.

Run: ``python tests/bench/bench_journeys.py [--carts N] [--time-scale S]``.

The script starts the reference backend on loopback with a recording sender, posts an epoch,
and sends N devices and N ``added_to_cart`` events over the CDP batch API. Every run falls due
30 simulated minutes after its trigger, so runs fall due as fast as the intake stored them. It
prints the intake rate and the lateness of each push against its run's due time in wall ms
(median, 99th percentile, maximum). The poll interval (50 ms) bounds the lateness of a quiet
engine, so a median well above it means the engine falls behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "backend")]

from backend_harness import RunningBackend, default_config  # noqa: E402
from journey_harness import RecordingSender, post_epoch, wait_until  # noqa: E402

from sim.scenario.schema import FrequencyCap, Journey, Match, Trigger  # noqa: E402

DELAY = 1800.0
BATCH_MESSAGES = 400


def messages(carts: int) -> list[dict]:
    """Return a device registration and a cart event for each of ``carts`` people."""
    batch = []
    for index in range(carts):
        device = {"device": {"token": f"token-{index}", "type": "android"}}
        batch.append(
            {"type": "track", "userId": f"p{index}", "event": "Device Created or Updated",
             "messageId": f"d{index}", "context": device, "properties": {"push_enabled": True}}
        )  # fmt: skip
        batch.append(
            {"type": "track", "userId": f"p{index}", "event": "added_to_cart",
             "messageId": f"e{index}", "properties": {"sku": "s", "qty": 1, "cart_id": f"c{index}"}}
        )  # fmt: skip
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carts", type=int, default=5000, help="carts abandoned at once")
    parser.add_argument("--time-scale", type=float, default=1440.0, help="simulated s per wall s")
    args = parser.parse_args()

    journey = Journey(
        name="cart_recovery",
        trigger=Trigger(event="added_to_cart"),
        delay=DELAY,
        exit=Match(event="order_completed", match="cart_id"),
        frequency_cap=FrequencyCap(count=1, per=86400.0),
    )
    sender = RecordingSender()
    folder = Path(tempfile.mkdtemp(prefix="bench-journeys-"))
    config = dataclasses.replace(default_config(folder / "backend.db"), journeys=(journey,))
    backend = RunningBackend(config, sender_factory=sender)
    try:
        post_epoch(backend, time.time(), args.time_scale)
        batch = messages(args.carts)
        started = time.time()
        with backend.cdp() as client:
            for offset in range(0, len(batch), BATCH_MESSAGES):
                response = client.post(
                    "/v1/batch", json={"batch": batch[offset : offset + BATCH_MESSAGES]}
                )
                response.raise_for_status()
        intake_seconds = time.time() - started

        wait_until(
            lambda: len(sender.submitted) >= args.carts, timeout=120.0 + DELAY / args.time_scale
        )
        due_at = {
            row["id"]: row["due_at"] for row in backend.query("SELECT id, due_at FROM journey_runs")
        }
        runs_by_delivery = {
            row["delivery_id"]: row["run_id"]
            for row in backend.query("SELECT delivery_id, run_id FROM journey_sends")
        }
    finally:
        backend.shutdown()

    submitted = sender.submitted
    lateness_ms = sorted(
        (push.at - due_at[runs_by_delivery[push.job.delivery_id]]) * 1000 for push in submitted
    )

    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}")  # fmt: skip
    print(f"carts: {args.carts}, time scale {args.time_scale:g}")
    print(f"intake: {2 * args.carts / intake_seconds:,.0f} CDP messages/s")
    print(
        f"lateness (wall ms): median {statistics.median(lateness_ms):.0f}, "
        f"p99 {lateness_ms[int(0.99 * (len(lateness_ms) - 1))]:.0f}, max {lateness_ms[-1]:.0f}"
    )


if __name__ == "__main__":
    main()
