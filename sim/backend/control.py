"""Operational routes: the run's epoch (``/control/epoch``), ``/healthz`` and ``/metrics``."""

from __future__ import annotations

import dataclasses
import functools
import hmac
import json
import logging
import sqlite3

from aiohttp import hdrs, web

from sim.backend import epochs
from sim.backend.limits import read_limited_body
from sim.backend.metrics import CONTENT_TYPE
from sim.backend.services import SERVICES, RunClock, Services
from sim.formats.epoch import Epoch
from sim.scenario.dump import journey_to_plain

log = logging.getLogger(__name__)

# The control body is a handful of numbers; anything larger is a mistake (bytes).
CONTROL_BODY_MAX_BYTES = 4096
RUN_KEY_MAX_BYTES = 256


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _authorized(request: web.Request, services: Services) -> web.Response | None:
    """Return an error response unless the request carries the configured bearer token."""
    expected = services.config.control_token
    if not expected:
        return _error(401, "the control endpoint is disabled: configure a control token")
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        return _error(401, "unauthorized: send Authorization: Bearer <control token>")
    return None


def parse_epoch_request(data: object) -> RunClock:
    """Build a run clock from the control body, raising ValueError that names the bad key."""
    if not isinstance(data, dict):
        raise ValueError("invalid body: expected a JSON object with wall_t0, sim_t0, time_scale")
    epoch = Epoch.from_mapping(data)

    run_key = data.get("run_key")
    if run_key is not None and (not isinstance(run_key, str) or not run_key):
        raise ValueError(f"invalid run_key {run_key!r:.60}: expected a non-empty string")
    if run_key is not None and len(run_key.encode()) > RUN_KEY_MAX_BYTES:
        raise ValueError(f"invalid run_key: longer than {RUN_KEY_MAX_BYTES} bytes")

    shard_count = data.get("shard_count")
    if shard_count is not None and (
        isinstance(shard_count, bool) or not isinstance(shard_count, int) or shard_count < 1
    ):
        raise ValueError(f"invalid shard_count {shard_count!r:.60}: expected an integer >= 1")
    return RunClock(epoch, run_key, shard_count)


def _clock_json(clock: RunClock) -> dict:
    return {
        "wall_t0": clock.epoch.wall_t0,
        "sim_t0": clock.epoch.sim_t0,
        "time_scale": clock.epoch.time_scale,
        "run_key": clock.run_key,
        "shard_count": clock.shard_count,
    }


async def post_epoch(request: web.Request) -> web.Response:
    """POST /control/epoch: store the run's epoch; later conversions use it."""
    services = request.app[SERVICES]
    denied = _authorized(request, services)
    if denied is not None:
        log.warning("control request from %s rejected: bad or missing token", request.remote)
        return denied

    body = await read_limited_body(request, CONTROL_BODY_MAX_BYTES)
    if body is None:
        return _error(413, f"request body too large: the limit is {CONTROL_BODY_MAX_BYTES} bytes")
    try:
        clock = parse_epoch_request(json.loads(body))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return _error(400, f"invalid JSON body: {error}")
    except ValueError as error:
        return _error(400, str(error))

    earlier = await install_clock(services, clock)
    # The journeys this backend runs, so that a driver can tell when they are not the ones of
    # the scenario it simulates, its naive switches that are on, which a report names, and
    # what earlier runs left in the store, which a driver warns about.
    journeys = [journey.name for journey in services.config.journeys]
    settings = {journey.name: journey_to_plain(journey) for journey in services.config.journeys}
    naive = services.config.naive_switches()
    return web.json_response(
        {
            **_clock_json(clock),
            "journeys": journeys,
            "journey_settings": settings,
            "naive": naive,
            "earlier": dataclasses.asdict(earlier) | {"warning": earlier.warning()},
        }
    )


async def install_clock(services: Services, clock: RunClock) -> epochs.EarlierTraffic:
    """Store ``clock`` so a restart restores it, then make later conversions use it.

    Returns what the store contained before, and logs a warning when earlier traffic left profiles.
    """
    posted_at = clock.wall_now()

    op = functools.partial(
        epochs.save_epoch,
        epoch=clock.epoch,
        run_key=clock.run_key,
        shard_count=clock.shard_count,
        posted_at=posted_at,
    )
    earlier = await services.store.write(op)
    services.clock = clock
    log.info(
        "epoch set: wall_t0=%s sim_t0=%s time_scale=%s shard_count=%s",
        clock.epoch.wall_t0,
        clock.epoch.sim_t0,
        clock.epoch.time_scale,
        clock.shard_count,
    )
    warning = earlier.warning()
    if warning is not None:
        log.warning("new run at wall_t0=%s: %s", clock.epoch.wall_t0, warning)
    return earlier


async def get_epoch(request: web.Request) -> web.Response:
    """GET /control/epoch: return the epoch in force (scale 1 when none was posted)."""
    services = request.app[SERVICES]
    denied = _authorized(request, services)
    if denied is not None:
        return denied
    return web.json_response(_clock_json(services.clock))


def load_latest_clock(connection: sqlite3.Connection) -> RunClock | None:
    """Return the last epoch stored by the control endpoint, or None if there is none."""
    row = connection.execute(
        "SELECT wall_t0, sim_t0, time_scale, run_key, shard_count FROM epochs "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    epoch = Epoch(row["wall_t0"], row["sim_t0"], row["time_scale"])
    return RunClock(epoch, row["run_key"], row["shard_count"])


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 while the app serves requests."""
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: the counters in Prometheus text format."""
    text = request.app[SERVICES].metrics.render()
    return web.Response(body=text.encode(), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE})


def add_routes(app: web.Application) -> None:
    """Register the control, health and metrics routes on ``app``."""
    app.router.add_post("/control/epoch", post_epoch)
    app.router.add_get("/control/epoch", get_epoch)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
