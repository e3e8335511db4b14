"""The gateways' control and inbox HTTP API, on its own port (127.0.0.1 unless configured).

- ``POST /control/run``: ``{"epoch": {"wall_t0", "sim_t0", "time_scale"}, "run_key": hex,
  "shard_count": n, "mode": "registry"|"open", "topic": s, "project": s}``. ``seed`` may replace
  ``run_key``, which is then derived from it as the model does. An optional ``"throttle":
  {"limit": n, "window": wall seconds}`` sets the per-token push limit (limit 0 turns it off);
  without it the run gets the throttle the gateways started with.
  ``GET /control/run`` returns the run in force (404 before the first post).
- ``POST /control/invalidations``: ``{"invalidations": [{"token", "reason", "died_at",
  "reported_at"}]}``, times in simulated Unix seconds.
- ``POST /control/faults``: ``{"faults": [...], "replace": true, "anchor": "run"|"now"}``, each
  fault written as in a scenario's ``gateways.faults``; ``GET /control/faults`` lists them.
- ``GET /inbox/{shard}?after=SEQ&wait=SECONDS&limit=N`` and ``POST /inbox/{shard}/ack``
  ``{"cursor": SEQ}``.
- ``GET /metrics`` (Prometheus text) and ``GET /healthz``, which need no token.

Every /control and /inbox request needs ``Authorization: Bearer <world.control_token>``. Errors
are JSON objects ``{"error": message}`` whose message names the value and the fix.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import math
import time
from typing import Any

from aiohttp import web

from sim.formats.epoch import Epoch
from sim.formats.tokens import derive_run_key, is_well_formed, parse_token, run_key_id
from sim.gateways.inbox import MAX_LIMIT, MAX_WAIT, entry_json
from sim.gateways.logs import RepeatLimiter
from sim.gateways.registry import Invalidation
from sim.gateways.run import RunConfig
from sim.gateways.world import GatewayWorld
from sim.scenario import ScenarioError, load_scenario
from sim.scenario.schema import Fault

log = logging.getLogger(__name__)
_repeats = RepeatLimiter(log)

WORLD_KEY = web.AppKey("world", GatewayWorld)
MAX_BODY = 64 * 1024 * 1024  # bytes; an invalidation batch of ~200k tokens fits


class BadRequest(Exception):
    """Invalid input, with the HTTP status to return."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


@web.middleware
async def _guard(request: web.Request, handler):
    """Check the bearer token and turn every failure into a JSON error."""
    world = request.app[WORLD_KEY]
    if request.path.startswith(("/control", "/inbox")):
        presented = request.headers.get("Authorization", "")
        expected = f"Bearer {world.control_token}"
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            _repeats.log(
                logging.WARNING,
                "unauthorized",
                "control API rejected %s %s from %s: missing or invalid bearer token",
                request.method,
                request.path,
                request.remote,
            )
            return _error(
                401,
                "missing or invalid bearer token: send 'Authorization: Bearer <token>' with the "
                "control token from the gateways' config file",
                **{"WWW-Authenticate": 'Bearer realm="pushsim-gateways"'},
            )
    try:
        return await handler(request)
    except BadRequest as error:
        # A backend that follows the gateways' epoch polls GET /control/run and gets 404 until
        # the first run is posted, which is expected, not a client's mistake.
        expected = error.status == 404 and request.path == "/control/run"
        _repeats.log(
            logging.INFO if expected else logging.WARNING,
            f"{error.status} {request.method} {request.path}",
            "control API rejected %s %s with %d: %s",
            request.method,
            request.path,
            error.status,
            error,
        )
        return _error(error.status, str(error))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _error(error.status, f"{error.reason} on {request.method} {request.path}")
    except Exception as error:
        _repeats.log(
            logging.ERROR,
            f"{request.method} {request.path}",
            "control API %s %s failed: %r",
            request.method,
            request.path,
            error,
        )
        return _error(500, f"internal error on {request.method} {request.path}: {error!r}")


def _bounded_int(text: str) -> int:
    # Every integer this API takes (seq, shard count, seconds) fits in 64 bits. Larger ones would
    # only overflow later, when converted to float or stored in SQLite.
    value = int(text)
    if abs(value) >= 2**63:
        raise ValueError(f"integer {text[:30]}... does not fit in 64 bits")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:30]} is out of range")
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


async def _json_object(request: web.Request) -> dict:
    try:
        text = (await request.read()).decode("utf-8")
        body = json.loads(
            text,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            parse_constant=_reject_constant,
        )
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"invalid JSON body: {error}; send a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest(f"invalid body of type {type(body).__name__}: send a JSON object")
    return body


def _field(body: dict, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if name not in body:
        if default is ...:
            raise BadRequest(f"missing field {name!r}")
        return default
    value = body[name]
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in _types(kind):
        expected = " or ".join(t.__name__ for t in _types(kind))
        raise BadRequest(f"invalid {name} {value!r}: expected {expected}")
    return value


def _types(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


async def post_run(request: web.Request) -> web.Response:
    """Install the run's epoch, key, shard count, mode and audiences."""
    world = request.app[WORLD_KEY]
    body = await _json_object(request)

    epoch_data = _field(body, "epoch", dict)
    try:
        epoch = Epoch.from_mapping(epoch_data)
    except ValueError as error:
        raise BadRequest(f"{error}; send wall_t0 and sim_t0 in Unix seconds") from None
    if not all(math.isfinite(value) for value in (epoch.wall_t0, epoch.sim_t0, epoch.time_scale)):
        raise BadRequest(f"invalid epoch {epoch_data!r}: every value must be a finite number")

    if "run_key" in body:
        text = _field(body, "run_key", str)
        try:
            run_key = bytes.fromhex(text)
        except ValueError:
            raise BadRequest(
                "invalid run_key: it is not hex; send the run key as hex digits, or send seed"
            ) from None
    elif "seed" in body:
        run_key = derive_run_key(_field(body, "seed", int))
    else:
        raise BadRequest("missing field 'run_key': send the run key as hex, or the seed")

    try:
        config = RunConfig(
            epoch=epoch,
            run_key=run_key,
            shard_count=_field(body, "shard_count", int),
            mode=_field(body, "mode", str, world.default_mode),
            topic=_field(body, "topic", str, world.default_topic),
            project=_field(body, "project", str, world.default_project),
        )
    except ValueError as error:
        raise BadRequest(str(error)) from None

    # A run without a throttle gets the gateways' starting one, not the previous run's.
    throttle = _field(body, "throttle", dict, None)
    limit, window = world.default_throttle
    if throttle is not None:
        try:
            limit = _field(throttle, "limit", int)
            window = float(_field(throttle, "window", (int, float)))
        except BadRequest as error:
            raise BadRequest(f"throttle: {error}; send {{'limit': n, 'window': seconds}}") from None
    try:
        world.registry.set_throttle(limit, window)
    except ValueError as error:
        raise BadRequest(str(error)) from None

    world.configure_run(config)
    return web.json_response(_run_json(world, config))


def _run_json(world: GatewayWorld, config: RunConfig) -> dict:
    return {
        "throttle": {
            "limit": world.registry.throttle.limit,
            "window": world.registry.throttle.window,
        },
        "mode": config.mode,
        "shard_count": config.shard_count,
        "topic": config.topic,
        "project": config.project,
        "epoch": dataclasses.asdict(config.epoch),
        "posted_at": world.run.posted_at,
        "run_key_id": run_key_id(config.run_key),
    }


async def get_run(request: web.Request) -> web.Response:
    """Return the run in force, so a backend under test can read its epoch."""
    world = request.app[WORLD_KEY]
    config = world.run.config
    if config is None:
        raise BadRequest(
            "no run configured yet: pushsim run posts one before its first action", 404
        )
    return web.json_response(_run_json(world, config))


def _invalidation(world: GatewayWorld, index: int, item: Any) -> Invalidation:
    where = f"invalidations[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"invalid {where}: expected an object with token, reason, died_at, "
                         "reported_at")  # fmt: skip
    try:
        token = _field(item, "token", str)
        invalidation = Invalidation(
            token=token,
            reason=_field(item, "reason", str),
            died_at=_field(item, "died_at", (int, float)),
            reported_at=_field(item, "reported_at", (int, float)),
        )
    except (BadRequest, ValueError) as error:
        raise BadRequest(f"{where}: {error}") from None

    if not (is_well_formed(token, "ios") or is_well_formed(token, "android")):
        raise BadRequest(f"{where}: invalid token {token[:80]!r}: it is neither an APNs nor an "
                         "FCM token")  # fmt: skip
    config = world.run.config
    if config is not None and config.mode == "registry":
        # parse_token, not the cached lookup, so a large batch does not evict the tokens pushed.
        if parse_token(config.run_key, token) is None:
            raise BadRequest(
                f"{where}: token {token[:80]!r} was not issued under this run's key; post the "
                "same run_key (or seed) to /control/run as the model uses"
            )
    return invalidation


async def post_invalidations(request: web.Request) -> web.Response:
    """Store a batch of invalidations, all or none."""
    world = request.app[WORLD_KEY]
    body = await _json_object(request)
    items = _field(body, "invalidations", list)

    def validate_and_store() -> int:
        batch = [_invalidation(world, index, item) for index, item in enumerate(items)]
        world.registry.report(batch)
        return len(batch)

    # Checking a MAC takes about 8 microseconds, so a batch of 100,000 tokens would hold the
    # event loop, which a wire server may share, for most of a second.
    accepted = await asyncio.get_running_loop().run_in_executor(None, validate_and_store)
    return web.json_response({"accepted": accepted})


def _parse_faults(world: GatewayWorld, items: list) -> tuple[list[Fault], list[str]]:
    # JSON is YAML, so the scenario loader validates live faults exactly as it validates a file.
    # The time scale is written with a dot and a signed exponent because YAML 1.1 reads "1e-05"
    # as a string.
    config = world.run.config
    text = json.dumps({"gateways": {"faults": items}})
    if config is not None:
        text = f'{{"clock": {{"time_scale": {config.epoch.time_scale:.9e}}}, {text[1:]}'
    try:
        loaded = load_scenario(text=text)
    except ScenarioError as error:
        problems = [
            f"{finding.path.removeprefix('gateways.')}: {finding.message}"
            for finding in error.findings
            if finding.severity == "error"
        ]
        raise BadRequest("invalid faults: " + "; ".join(problems)) from None
    warnings = [
        f"{finding.path.removeprefix('gateways.')}: {finding.message}"
        for finding in loaded.warnings
    ]
    return loaded.scenario.gateways.faults, warnings


async def post_faults(request: web.Request) -> web.Response:
    """Replace the live fault timeline, or add to it."""
    world = request.app[WORLD_KEY]
    body = await _json_object(request)
    items = _field(body, "faults", list)
    replace = _field(body, "replace", bool, True)
    anchor = _field(body, "anchor", str, "run")
    if anchor not in ("run", "now"):
        raise BadRequest(f"invalid anchor {anchor!r}: use 'run' (offsets from the run's start) "
                         "or 'now' (offsets from the current simulated time)")  # fmt: skip

    faults, warnings = _parse_faults(world, items)
    if anchor == "now":
        config = world.run.config
        if config is None:
            raise BadRequest("anchor 'now' needs the run's epoch: post /control/run first", 409)
        elapsed = config.epoch.sim_at(time.time()) - config.epoch.sim_t0
        faults = [dataclasses.replace(fault, start=fault.start + elapsed) for fault in faults]

    try:
        if replace:
            world.timeline.replace(faults)
        else:
            world.timeline.add(faults)
    except ValueError as error:
        raise BadRequest(str(error)) from None
    log.info("fault timeline %s: %d fault(s)", "replaced" if replace else "extended", len(faults))
    return web.json_response({"faults": len(world.timeline.faults), "warnings": warnings})


async def get_faults(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    return web.json_response({"faults": [dataclasses.asdict(f) for f in world.timeline.faults]})


def _shard(request: web.Request) -> int:
    world = request.app[WORLD_KEY]
    text = request.match_info["shard"]
    config = world.run.config
    if config is None:
        raise BadRequest("no run configured: post /control/run with the shard count first", 409)
    try:
        shard = int(text)
    except ValueError:
        shard = -1
    if not 0 <= shard < config.shard_count:
        raise BadRequest(
            f"invalid shard {text!r}: use an integer from 0 to {config.shard_count - 1}", 404
        )
    return shard


def _query_number(request: web.Request, name: str, kind: type, default, low, high):
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    # Compare before isfinite, which raises OverflowError for an int too large for a float.
    if value is None or not low <= value <= high or not math.isfinite(value):
        raise BadRequest(f"invalid {name} {text!r}: use a number from {low} to {high}")
    return value


async def get_inbox(request: web.Request) -> web.Response:
    """Return the shard's deliveries after the cursor, long-polling up to ``wait`` seconds."""
    world = request.app[WORLD_KEY]
    shard = _shard(request)
    after = _query_number(request, "after", int, None, 0, 2**63 - 1)
    wait = _query_number(request, "wait", float, 0.0, 0.0, MAX_WAIT)
    limit = _query_number(request, "limit", int, 1000, 1, MAX_LIMIT)

    entries = await world.inbox.fetch(shard, after=after, limit=limit, wait=wait)
    cursor = entries[-1].seq if entries else max(after or 0, world.inbox.acked(shard))
    return web.json_response(
        {"shard": shard, "cursor": cursor, "deliveries": [entry_json(entry) for entry in entries]}
    )


async def post_ack(request: web.Request) -> web.Response:
    """Acknowledge every delivery of the shard up to the cursor."""
    world = request.app[WORLD_KEY]
    shard = _shard(request)
    body = await _json_object(request)
    cursor = _field(body, "cursor", int)
    if cursor < 0:
        raise BadRequest(f"invalid cursor {cursor}: use the seq of a delivery you received")
    try:
        acked = world.inbox.ack(shard, cursor)
    except ValueError as error:
        raise BadRequest(str(error)) from None
    return web.json_response({"shard": shard, "cursor": acked})


async def get_metrics(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    return web.Response(
        text=world.render_metrics(), content_type="text/plain", charset="utf-8",
        headers={"X-Prometheus-Format": "0.0.4"},
    )  # fmt: skip


async def get_healthz(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    return web.json_response(
        {"status": "ok", "run_configured": world.run.config is not None,
         "ledger_backlog": world.ledger.backlog}
    )  # fmt: skip


def make_control_app(world: GatewayWorld) -> web.Application:
    """Return the aiohttp application of the control and inbox API for ``world``."""
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY)
    app[WORLD_KEY] = world
    app.router.add_post("/control/run", post_run)
    app.router.add_get("/control/run", get_run)
    app.router.add_post("/control/invalidations", post_invalidations)
    app.router.add_post("/control/faults", post_faults)
    app.router.add_get("/control/faults", get_faults)
    app.router.add_get("/inbox/{shard}", get_inbox)
    app.router.add_post("/inbox/{shard}/ack", post_ack)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    return app


async def serve_control(
    world: GatewayWorld, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve the control API on ``host:port`` (0 picks a free port); return runner and port."""
    runner = web.AppRunner(make_control_app(world), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    log.info("control API listening on http://%s:%d", host, bound)
    return runner, bound


async def stop_control(runner: web.AppRunner) -> None:
    """Stop a control API started by ``serve_control``, ending open long polls."""
    addresses = list(runner.addresses)
    await runner.cleanup()
    log.info("control API on %s stopped", addresses)
