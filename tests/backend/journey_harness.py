"""Helpers for journey tests: a recording push sender, an epoch, and SDK-shaped calls.

The recording sender replaces APNs and FCM, the edge of the machine: it keeps every job
with the wall time it was submitted and reports each one accepted at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from backend_harness import CONTROL_TOKEN, RunningBackend

from sim.backend.push import ACCEPTED, PushJob, PushListener, PushOutcome

# Simulated seconds per wall second in journey tests: a 30-minute delay waits 0.5 wall seconds.
TIME_SCALE = 3600.0
# Wall seconds a test waits for something the engine should do before it fails.
WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Submitted:
    """A push job and the wall time at which the engine submitted it."""

    job: PushJob
    at: float


class RecordingSender:
    """A push sender that records jobs and accepts each one.

    As a sender factory it returns itself, so a restarted backend adds to the same record.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._submitted: list[Submitted] = []
        self.listeners: list[PushListener] = []

    def __call__(self, config, listener: PushListener) -> RecordingSender:
        self.listeners.append(listener)
        return self

    async def start(self) -> None:
        return None

    async def submit(self, job: PushJob) -> None:
        with self._lock:
            self._submitted.append(Submitted(job, time.time()))
        self.listeners[-1].push_outcome(PushOutcome(job.delivery_id, ACCEPTED, 200))

    async def close(self) -> None:
        return None

    @property
    def submitted(self) -> list[Submitted]:
        with self._lock:
            return list(self._submitted)


def wait_until(predicate: Callable[[], object], timeout: float = WAIT_SECONDS) -> object:
    """Poll ``predicate`` every 10 ms until it returns something true, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout} s")


def post_epoch(backend: RunningBackend, sim_t0: float, time_scale: float = TIME_SCALE) -> float:
    """Post an epoch that maps now to ``sim_t0``; return its wall_t0."""
    wall_t0 = time.time()
    with backend.client() as client:
        response = client.post(
            "/control/epoch",
            json={"wall_t0": wall_t0, "sim_t0": sim_t0, "time_scale": time_scale},
            headers={"Authorization": f"Bearer {CONTROL_TOKEN}"},
        )
    assert response.status_code == 200, response.text
    return wall_t0


def add_device(
    track: httpx.Client,
    person: str,
    token: str,
    platform: str,
    push_enabled: object = True,
    **extra: object,
) -> None:
    attributes = {} if push_enabled is None else {"push_enabled": push_enabled}
    attributes.update(extra)
    response = track.put(
        f"/api/v1/customers/{person}/devices",
        json={"device": {"id": token, "platform": platform, "attributes": attributes}},
    )
    assert response.status_code == 200, response.text


def identify(track: httpx.Client, person: str, **attributes: object) -> None:
    response = track.put(f"/api/v1/customers/{person}", json=attributes)
    assert response.status_code == 200, response.text


def send_event(track: httpx.Client, person: str, name: str, **data: object) -> float:
    """Track an event as the SDK does and return the wall time just before it was sent."""
    sent_at = time.time()
    response = track.post(f"/api/v1/customers/{person}/events", json={"name": name, "data": data})
    assert response.status_code == 200, response.text
    return sent_at


def runs(backend: RunningBackend, journey: str | None = None) -> list[dict]:
    sql = "SELECT * FROM journey_runs"
    parameters: tuple = ()
    if journey is not None:
        sql += " WHERE journey = ?"
        parameters = (journey,)
    return [dict(row) for row in backend.query(sql + " ORDER BY id", parameters)]


def metrics_text(backend: RunningBackend) -> str:
    with backend.client() as client:
        return client.get("/metrics").text
