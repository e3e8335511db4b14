"""The journey engine: turns stored events into journey runs and due runs into pushes.

One task follows new events and starts runs for event, repeated_event and delay_range journeys.
One task per inactivity journey sweeps for people who stopped opening the app, and one task per
broadcast journey creates its runs when its start time comes. One worker per journey takes the
due runs. For each run it checks the exit, eligibility, frequency cap and quiet hours, in that
order, then submits one push per eligible device to the sender. Every run lives in
``journey_runs``, so a restart on the same file resumes the runs that were waiting.

Delays, caps and quiet hours are simulated time, converted to wall time with the run's epoch
(scale 1 until an epoch is posted). Broadcast send rates are wall pushes per second.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import time
from collections.abc import Callable, Coroutine

from sim.backend import journey_outcomes, journey_store
from sim.backend.devices import ACTIVE
from sim.backend.journey_decisions import HOLD, SEND, Decision, apply_decisions, decide_runs
from sim.backend.pacing import Pacer
from sim.backend.push import FAILED, PruneRequest, PushJob, PushOutcome, SenderFactory
from sim.backend.queries import events_after, get_device
from sim.backend.services import WALL_EPOCH, Services
from sim.backend.store import StoreClosedError
from sim.formats.epoch import Epoch
from sim.scenario.schema import Journey

log = logging.getLogger(__name__)

# Wall seconds a broadcast whose start passed before the backend started waits for an epoch
# before the backend warns. pushsim run posts the epoch within a few seconds of the start.
EPOCH_WAIT_WARNING_SECONDS = 30.0

# Wall seconds by which a broadcast's start may precede the moment the engine saw the epoch and
# still be sent: pushsim run posts its epoch within seconds of the run's start.
STALE_EPOCH_SECONDS = 30.0

CURSOR_KEY = "journeys.last_event_id"

# Kinds started by a single stored event.
EVENT_KINDS = ("event", "repeated_event", "delay_range")

# Events read per poll and due runs decided per batch. Larger batches commit fewer times.
EVENT_BATCH = 500
RUN_BATCH = 500

# A broadcast worker decides at most this many wall seconds of sends at a time, so the sent_at
# it records stays close to the moment each push really leaves.
BROADCAST_BATCH_SECONDS = 0.5

# Wall seconds that close() waits for the engine's tasks to finish their current step.
STOP_TIMEOUT_SECONDS = 10.0


class JourneyEngine:
    """Runs the configured journeys against the store and a push sender.

    It is also the sender's ``PushListener``: ``push_outcome`` and ``prune`` queue the reports,
    which a task writes to the store. Both must be called on the engine's event loop.
    """

    def __init__(self, services: Services, sender_factory: SenderFactory) -> None:
        self._services = services
        self._journeys = list(services.config.journeys)
        self._by_name = {journey.name: journey for journey in self._journeys}
        self._sender = sender_factory(services.config, self)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._reports_ready = asyncio.Event()
        self._reports_closed = False
        self._outcomes: collections.deque[PushOutcome] = collections.deque()
        self._prunes: collections.deque[PruneRequest] = collections.deque()
        self._report_task: asyncio.Task | None = None
        # Journey of each push with the sender, for the push metrics.
        self._in_flight: dict[str, str] = {}
        self._started_at = time.time()

    async def start(self) -> None:
        """Start the sender and the engine's tasks, and submit pushes left without an outcome."""
        self._started_at = time.time()
        render_metrics = getattr(self._sender, "render_metrics", None)
        if render_metrics is not None:
            self._services.metrics.sources.append(render_metrics)
        await self._sender.start()
        self._report_task = asyncio.create_task(self._write_reports(), name="journey-reports")

        pending = await self._services.store.read(
            lambda connection: journey_outcomes.pending_jobs(connection, self._by_name)
        )
        if pending:
            log.info("submitting %d pushes again that had no outcome before the stop", len(pending))
        self._spawn("journey-resubmit", self._submit_all(pending, None))

        if any(journey.kind in EVENT_KINDS for journey in self._journeys):
            self._spawn("journey-events", self._follow_events())
        for journey in self._journeys:
            if journey.kind == "inactivity":
                self._spawn(f"journey-sweep-{journey.name}", self._sweep(journey))
            if journey.kind == "broadcast":
                self._spawn(f"journey-broadcast-{journey.name}", self._start_broadcast(journey))
            self._spawn(f"journey-worker-{journey.name}", self._work(journey))
        log.info("journey engine started with %d journeys", len(self._journeys))

    async def close(self) -> None:
        """Stop starting and sending runs, let the sender finish, and store every outcome."""
        self._stopping.set()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_SECONDS)
            for task in pending:
                log.warning("journey task %s did not stop in time: cancelled", task.get_name())
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error(
                        "journey task %s had ended with an error: %r",
                        task.get_name(),
                        task.exception(),
                    )

        await self._sender.close()

        self._reports_closed = True
        self._reports_ready.set()
        if self._report_task is not None:
            await self._report_task
        log.info("journey engine stopped")

    # The sender's reports. They only queue, so a sender never waits for the store.

    def push_outcome(self, outcome: PushOutcome) -> None:
        self._outcomes.append(outcome)
        self._reports_ready.set()

    def prune(self, request: PruneRequest) -> None:
        self._prunes.append(request)
        self._reports_ready.set()

    async def registered_at(self, token: str) -> float | None:
        device = await self._services.store.read(lambda connection: get_device(connection, token))
        if device is None or device["status"] != ACTIVE:
            return None
        return device["registered_at"]

    # Tasks.

    def _spawn(self, name: str, coroutine: Coroutine) -> None:
        self._tasks.append(asyncio.create_task(coroutine, name=name))

    def _epoch(self):
        return self._services.clock.epoch

    async def _pause(self, seconds: float) -> None:
        """Sleep for ``seconds`` wall seconds, or less when the engine stops."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=max(seconds, 0.0))
        except TimeoutError:
            pass

    async def _guarded(self, step: Callable[[], Coroutine], description: str) -> bool:
        """Run one step of a task; log and swallow its error. Return False once the store closed."""
        try:
            await step()
        except StoreClosedError:
            return False
        except Exception:
            log.exception("journey engine: %s failed; retrying after a pause", description)
            await self._pause(self._services.config.journey_poll_seconds)
        return True

    async def _follow_events(self) -> None:
        store = self._services.store
        poll = self._services.config.journey_poll_seconds
        journeys = [journey for journey in self._journeys if journey.kind in EVENT_KINDS]
        names = sorted({journey.trigger.event for journey in journeys})
        cursor = await store.read(
            lambda connection: journey_store.load_cursor(connection, CURSOR_KEY)
        )

        while not self._stopping.is_set():
            full = False

            async def step() -> None:
                nonlocal cursor, full
                after = cursor
                events = await store.read(
                    lambda connection: events_after(
                        connection, after, names=names, limit=EVENT_BATCH
                    )
                )
                if not events:
                    return
                epoch = self._epoch()
                started = await store.write(
                    functools.partial(
                        journey_store.start_runs_for_events,
                        journeys=journeys,
                        events=events,
                        epoch=epoch,
                        cursor_key=CURSOR_KEY,
                        now=time.time(),
                    )
                )
                cursor = events[-1]["id"]
                full = len(events) == EVENT_BATCH
                for name in started:
                    self._services.metrics.count_journey_runs(name, "started")

            if not await self._guarded(step, "following new events"):
                return
            if not full:
                await self._pause(poll)

    async def _sweep(self, journey: Journey) -> None:
        interval = self._services.config.inactivity_sweep_seconds

        async def step() -> None:
            epoch = self._epoch()
            started = await self._services.store.write(
                functools.partial(
                    journey_store.sweep_inactive, journey=journey, epoch=epoch, now=time.time()
                )
            )
            if started:
                self._services.metrics.count_journey_runs(journey.name, "started", started)

        while not self._stopping.is_set():
            if not await self._guarded(step, f"inactivity sweep of {journey.name}"):
                return
            await self._pause(interval)

    async def _start_broadcast(self, journey: Journey) -> None:
        """Start the broadcast once per run's epoch, when its start time comes under it.

        A backend that serves several runs gets a new epoch for each, from POST /control/epoch
        or from the gateways. An epoch under which the start had passed well before the engine
        saw it belongs to a run that is over, such as the last run's epoch that a backend reads
        from the gateways at startup. The broadcast then waits for the next epoch, because the
        new run has not filled the store yet.
        """
        assert journey.at is not None
        at = journey.at.timestamp()
        poll = self._services.config.journey_poll_seconds
        waiting_since: float | None = None
        warned = False
        current: Epoch | None = None
        seen_at = 0.0
        done_for: Epoch | None = None

        while not self._stopping.is_set():
            epoch = self._epoch()
            now = time.time()
            if epoch != current:
                current, seen_at = epoch, now
            if epoch == done_for:
                await self._pause(10 * poll)
                continue
            due = epoch.wall_at(at)
            if due > now:
                await self._pause(min(due - now, 10 * poll))
                continue
            if epoch == WALL_EPOCH and due < self._started_at:
                # Without a posted epoch, a start time already past at startup most likely
                # belongs to a run whose orchestrator has not posted its epoch yet. pushsim run
                # posts it within seconds, so only a longer wait is worth a warning.
                if waiting_since is None:
                    waiting_since = now
                    log.info(
                        "broadcast %s: its start %s passed before the run's epoch arrived; "
                        "waiting for it (POST /control/epoch, or the gateways' run with "
                        "--epoch-from-gateways)",
                        journey.name,
                        journey.at.isoformat(),
                    )
                elif not warned and now - waiting_since >= EPOCH_WAIT_WARNING_SECONDS:
                    log.warning(
                        "broadcast %s: still waiting after %.0f s for the run's epoch, because "
                        "its start %s passed before the backend started; post the run's epoch "
                        "to /control/epoch, start the backend with --epoch-from-gateways, or "
                        "set the journey's at to a future time",
                        journey.name,
                        now - waiting_since,
                        journey.at.isoformat(),
                    )
                    warned = True
                await self._pause(10 * poll)
                continue
            if epoch != WALL_EPOCH and due < seen_at - STALE_EPOCH_SECONDS:
                log.info(
                    "broadcast %s: its start passed %.0f s before the backend read the epoch "
                    "wall_t0=%s, so that epoch's run is over; waiting for the next run's epoch",
                    journey.name,
                    seen_at - due,
                    epoch.wall_t0,
                )
                done_for = epoch
                continue

            started = False

            async def step(due=due, now=now, epoch=epoch) -> None:
                nonlocal started
                created = await self._services.store.write(
                    functools.partial(
                        journey_store.start_broadcast,
                        journey=journey,
                        epoch=epoch,
                        due_at=due,
                        now=now,
                    )
                )
                started = True
                if created:
                    self._services.metrics.count_journey_runs(journey.name, "started", created)
                    log.info("broadcast %s started for %d profiles", journey.name, created)

            if not await self._guarded(step, f"start of broadcast {journey.name}"):
                return
            if started:
                done_for = epoch

    async def _work(self, journey: Journey) -> None:
        """Decide and send the due runs of one journey until the engine stops."""
        config = self._services.config
        store = self._services.store
        pacer = Pacer(journey.send_rate) if journey.kind == "broadcast" else None
        batch = RUN_BATCH
        if pacer is not None:
            batch = max(1, min(RUN_BATCH, math.ceil(journey.send_rate * BROADCAST_BATCH_SECONDS)))

        while not self._stopping.is_set():
            wait = 0.0

            async def step() -> None:
                nonlocal wait
                if await self._work_once(journey, batch, pacer):
                    return
                next_due = await store.read(
                    lambda connection: journey_store.next_due_at(connection, journey.name)
                )
                wait = config.journey_poll_seconds
                if next_due is not None:
                    wait = min(wait, max(next_due - time.time(), 0.0))

            if not await self._guarded(step, f"runs of journey {journey.name}"):
                return
            await self._pause(wait)

    async def _work_once(self, journey: Journey, batch: int, pacer: Pacer | None) -> bool:
        """Decide one batch of due runs and submit their pushes; True if the batch was full."""
        store = self._services.store
        now = time.time()
        runs = await store.read(
            lambda connection: journey_store.due_runs(connection, journey.name, now, batch)
        )
        if not runs:
            return False

        epoch = self._epoch()
        check_exit = not self._services.config.no_exit_check
        decisions = await store.read(
            lambda connection: decide_runs(
                connection, journey, runs, epoch, now, check_exit=check_exit
            )
        )
        jobs = await store.write(
            functools.partial(
                apply_decisions, journey=journey, decisions=decisions, now=time.time()
            )
        )
        self._count_decisions(journey, decisions)
        await self._submit_all(jobs, pacer)
        return len(runs) == batch

    def _count_decisions(self, journey: Journey, decisions: list[Decision]) -> None:
        metrics = self._services.metrics
        for decision in decisions:
            log.debug(
                "journey %s run %d (profile %d): %s",
                journey.name,
                decision.run["id"],
                decision.run["profile_id"],
                decision.action,
            )
            if decision.action == HOLD:
                if not decision.run["detail"].get("quiet_held"):
                    metrics.count_journey_runs(journey.name, "quiet_held")
            elif decision.action == SEND:
                metrics.count_journey_runs(journey.name, "sent")
            else:
                metrics.count_journey_runs(journey.name, decision.action)

    async def _submit_all(self, jobs: list[PushJob], pacer: Pacer | None) -> None:
        for job in jobs:
            if pacer is not None:
                await pacer.wait()
            self._in_flight[job.delivery_id] = job.journey
            try:
                await self._sender.submit(job)
            except Exception as error:
                # The push is already stored as submitted, so it needs an outcome to end its run.
                log.exception("push %s of journey %s not submitted", job.delivery_id, job.journey)
                self.push_outcome(
                    PushOutcome(
                        job.delivery_id,
                        FAILED,
                        reason=f"submit failed: {error}",
                        finished_at=time.time(),
                    )
                )

    async def _write_reports(self) -> None:
        """Write the sender's outcomes and prune requests to the store as they arrive."""
        while True:
            await self._reports_ready.wait()
            self._reports_ready.clear()
            try:
                await self._write_pending_reports()
            except StoreClosedError:
                log.error("store closed before %d push outcomes were written", len(self._outcomes))
                return
            except Exception:
                log.exception("journey engine: writing push outcomes failed; retrying")
                await asyncio.sleep(self._services.config.journey_poll_seconds)
                self._reports_ready.set()
                continue
            if self._reports_closed and not self._outcomes and not self._prunes:
                return

    async def _write_pending_reports(self) -> None:
        """Write the queued outcomes, then the prune requests; a failed write leaves them queued."""
        store = self._services.store
        metrics = self._services.metrics

        outcomes = list(self._outcomes)
        if outcomes:
            finished = await store.write(
                functools.partial(
                    journey_outcomes.record_outcomes, outcomes=outcomes, now=time.time()
                )
            )
            for _ in outcomes:
                self._outcomes.popleft()
            for outcome in outcomes:
                journey = self._in_flight.pop(outcome.delivery_id, "unknown")
                metrics.count_push(journey, outcome.outcome)
            for journey_name, result in finished:
                if result == journey_store.FAILED:
                    metrics.count_journey_runs(journey_name, "failed")

        while self._prunes:
            request = self._prunes[0]
            pruned = await store.write(
                functools.partial(journey_outcomes.apply_prune, request=request, now=time.time())
            )
            self._prunes.popleft()
            if pruned:
                metrics.count_pruned(request.reason)
                log.info("pruned a device token: %s", request.reason)
            else:
                log.info(
                    "prune of a device token skipped: unknown, already pruned or registered "
                    "again since the send"
                )
