"""Device lanes: each device's SDK calls leave in order, and no device waits behind another.

A real SDK keeps a queue per app install, so one device's calls are sequential, while different
phones never wait for each other. Each device has its own FIFO queue. A fixed pool of lane
greenlets takes the next device that has work and is not already sending, sends that device's
oldest call, and hands the device back. The pool size is the number of requests that may be in
flight at once; it is Locust's user count in a live run.

A lane with nothing to send waits on the queue without a timeout, so an idle lane costs no timer
per wait. After ``finish`` no more calls come, so once the last queued call left, a sentinel
in the queue ends every lane.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.queue

from sim.driver.timing import SCHEDULE_LAG, TimingTable

log = logging.getLogger(__name__)

# Devices waiting for a free lane above which the lanes count as backlogged. At 5,000 requests/s
# this is about 0.1 s of work, enough that a lane which frees up finds a device waiting.
BACKLOG_DEVICES = 500
# Put in the ready queue once the lanes are finished and empty. Each lane passes it on and ends.
_FINISHED = object()


@dataclass(slots=True)
class Action:
    """One SDK call waiting to be sent.

    ``due`` is the wall Unix time it was scheduled for. ``send`` performs it with a lane's
    client; ``dropped`` is called instead when it is already later than the lag budget.
    ``unsent`` is called, with how late it is, for a call still within the lag budget, or not
    yet due, when the run stops; without it such a call counts as dropped.
    """

    device: str
    due: float
    send: Callable[[Any], None]
    dropped: Callable[[float], None]
    unsent: Callable[[float], None] | None = None


class DeviceLanes:
    """Per-device FIFO queues served by a pool of lanes."""

    def __init__(
        self,
        lag_budget: float,
        timing: TimingTable,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.lag_budget = lag_budget
        self.timing = timing
        self._wall_clock = wall_clock
        self._queues: dict[str, deque[Action]] = {}
        self._busy: set[str] = set()
        self._ready: gevent.queue.Queue = gevent.queue.Queue()
        self.pending = 0
        self.sent = 0
        self.dropped = 0
        self._finishing = False

    def submit(self, action: Action) -> None:
        """Queue an action behind the device's earlier ones."""
        queue = self._queues.get(action.device)
        if queue is None:
            queue = self._queues[action.device] = deque()
        queue.append(action)
        self.pending += 1
        if len(queue) == 1 and action.device not in self._busy:
            self._ready.put(action.device)

    def backlogged(self) -> bool:
        """Tell whether more devices wait for a lane than ``BACKLOG_DEVICES``."""
        return self._ready.qsize() > BACKLOG_DEVICES

    def finish(self) -> None:
        """Tell the lanes that no more actions come, so they end once every queued one left."""
        self._finishing = True
        self._end_if_idle()

    def serve(self, client: Any) -> None:
        """Run one lane with ``client`` until the lanes are finished and empty.

        Call it from a greenlet.
        """
        while True:
            device = self._ready.get()
            if device is _FINISHED:
                # Pass it on to the next waiting lane.
                self._ready.put(_FINISHED)
                return
            self.serve_one(client, device)

    def _end_if_idle(self) -> None:
        if self._finishing and not self.pending and not self._busy:
            self._finishing = False  # one sentinel is enough
            self._ready.put(_FINISHED)

    def serve_one(self, client: Any, device: str) -> None:
        """Send the oldest call of ``device`` with ``client``, or drop it if it is too late."""
        queue = self._queues.get(device)
        if not queue:
            return  # abandoned at the end of the run
        action = queue.popleft()
        self.pending -= 1
        self._busy.add(device)
        try:
            lag = self._wall_clock() - action.due
            if lag > self.lag_budget:
                self._drop(action, lag)
            else:
                self.timing.get(SCHEDULE_LAG).add(max(0.0, lag * 1000.0))
                self.sent += 1
                action.send(client)
        except Exception:
            # A failing send must not kill the lane: the other devices depend on it.
            log.exception("SDK call for device %s failed", device)
        finally:
            self._busy.discard(device)
            if queue:
                self._ready.put(device)
            else:
                del self._queues[device]
                self._end_if_idle()

    def _drop(self, action: Action, lag: float) -> None:
        """Record ``action`` as dropped, ``lag`` wall seconds after it was due."""
        self.timing.get(SCHEDULE_LAG).add_drop(max(0.0, lag * 1000.0))
        self.dropped += 1
        action.dropped(lag)

    def abandon(self) -> tuple[int, int]:
        """Give up every action still queued; return how many were dropped and how many unsent.

        At the end of a run these calls will never be sent: a shard that Locust gave no lane
        keeps all of its calls queued, as an interrupted run keeps its last few. A call already
        later than the lag budget is dropped, as a lane would have dropped it. One still within
        the budget, or not yet due, is unsent: the stop, not the generator, kept it back.
        """
        now = self._wall_clock()
        dropped = unsent = 0
        for queue in self._queues.values():
            while queue:
                action = queue.popleft()
                lag = now - action.due
                try:
                    if lag <= self.lag_budget and action.unsent is not None:
                        unsent += 1
                        action.unsent(lag)
                    else:
                        dropped += 1
                        self._drop(action, lag)
                except Exception:
                    log.exception(
                        "recording an abandoned SDK call for device %s failed", action.device
                    )
        self.pending -= dropped + unsent
        # Devices a lane is sending for keep their queue until the lane hands them back.
        self._queues = {
            device: queue for device, queue in self._queues.items() if device in self._busy
        }
        self._finishing = True
        self._end_if_idle()
        return dropped, unsent

    def drain(self, timeout: float) -> bool:
        """Wait until every queued action left, up to ``timeout`` wall seconds."""
        deadline = self._wall_clock() + timeout
        while (self.pending or self._busy) and self._wall_clock() < deadline:
            gevent.sleep(0.05)
        return not (self.pending or self._busy)
