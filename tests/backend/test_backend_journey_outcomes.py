"""Push outcomes and prune requests from the sender, and what a stop does with pushes in flight."""

from __future__ import annotations

import datetime
import time

from journey_harness import (
    RecordingSender,
    Submitted,
    add_device,
    metrics_text,
    post_epoch,
    runs,
    send_event,
    wait_until,
)

from sim.backend.push import FAILED, REJECTED, PruneRequest, PushJob, PushOutcome
from sim.scenario.schema import FrequencyCap, Journey, Match, Trigger

SIM_START = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC).timestamp()


def cart_recovery() -> Journey:
    return Journey(
        name="cart_recovery",
        trigger=Trigger(event="added_to_cart"),
        delay=600.0,
        exit=Match(event="order_completed", match="cart_id"),
        frequency_cap=FrequencyCap(count=0),
    )


class GoneSender(RecordingSender):
    """Rejects every push as APNs does for a dead token, and requests that it be pruned."""

    def __init__(self, registered_before: float | None) -> None:
        super().__init__()
        self.registered_before = registered_before

    async def submit(self, job: PushJob) -> None:
        listener = self.listeners[-1]
        listener.push_outcome(PushOutcome(job.delivery_id, REJECTED, 410, "Unregistered"))
        listener.prune(PruneRequest(job.token, "Unregistered", self.registered_before))
        await super().submit(job)


class HoldingSender(RecordingSender):
    """Keeps every job in flight and reports them all failed only when closed."""

    async def submit(self, job: PushJob) -> None:
        with self._lock:
            self._submitted.append(Submitted(job, time.time()))

    async def close(self) -> None:
        for push in self.submitted:
            self.listeners[-1].push_outcome(
                PushOutcome(push.job.delivery_id, FAILED, reason="stopped")
            )


def device_status(backend, token: str) -> str:
    return backend.query("SELECT status FROM devices WHERE token = ?", (token,))[0]["status"]


def test_prune_after_rejection(make_journey_backend):
    backend, sender = make_journey_backend([cart_recovery()], sender=GoneSender(time.time() + 60))
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")

    wait_until(lambda: device_status(backend, "ann-iphone") == "pruned")
    [run] = wait_until(lambda: [r for r in runs(backend) if r["state"] == "done"])
    assert run["outcome"] == "failed"
    [send] = backend.query("SELECT outcome, status_code, reason FROM journey_sends")
    assert (send["outcome"], send["status_code"], send["reason"]) == (REJECTED, 410, "Unregistered")
    text = metrics_text(backend)
    assert 'pushsim_backend_devices_pruned_total{reason="Unregistered"} 1' in text
    pushes = 'pushsim_backend_journey_pushes_total{journey="cart_recovery",outcome="rejected"} 1'
    assert pushes in text


def test_prune_skipped_after_new_registration(make_journey_backend):
    # The token was registered after the moment the gateway reports it died, so it stays.
    backend, sender = make_journey_backend([cart_recovery()], sender=GoneSender(time.time() - 60))
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")

    wait_until(lambda: [r for r in runs(backend) if r["state"] == "done"])
    time.sleep(0.2)
    assert device_status(backend, "ann-iphone") == "active"


def test_stop_records_outcomes_in_flight(make_journey_backend):
    backend, sender = make_journey_backend([cart_recovery()], sender=HoldingSender())
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")
    wait_until(lambda: sender.submitted)

    backend.stop()
    [send] = backend.query("SELECT outcome, reason FROM journey_sends")
    assert (send["outcome"], send["reason"]) == (FAILED, "stopped")
    [run] = runs(backend)
    assert (run["state"], run["outcome"]) == ("done", "failed")


def test_restart_submits_pushes_without_outcome(make_journey_backend):
    holding = HoldingSender()
    backend, _ = make_journey_backend([cart_recovery()], sender=holding)
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")
    [held] = wait_until(lambda: holding.submitted)

    # As after a crash, the push gets no outcome: this close reports nothing.
    holding.close = RecordingSender.close.__get__(holding)
    backend.stop()
    recorder = RecordingSender()
    backend.sender_factory = recorder
    backend.start()

    [again] = wait_until(lambda: recorder.submitted)
    assert again.job.delivery_id == held.job.delivery_id
    assert again.job.link == held.job.link
    [run] = wait_until(lambda: [r for r in runs(backend) if r["state"] == "done"])
    assert run["outcome"] == "sent"


class BrokenSender(RecordingSender):
    """Raises on every submit, as a sender does once it was closed."""

    async def submit(self, job: PushJob) -> None:
        raise RuntimeError("the push sender is closed")


def test_submit_error_fails_the_run(make_journey_backend):
    backend, _ = make_journey_backend([cart_recovery()], sender=BrokenSender())
    post_epoch(backend, SIM_START)
    with backend.track() as track:
        add_device(track, "ann", "ann-iphone", "ios")
        send_event(track, "ann", "added_to_cart", sku="s", qty=1, cart_id="c1")

    [run] = wait_until(lambda: [r for r in runs(backend) if r["state"] == "done"])
    assert run["outcome"] == "failed"
    [send] = backend.query("SELECT outcome, reason FROM journey_sends")
    assert send["outcome"] == FAILED
    assert "the push sender is closed" in send["reason"]
