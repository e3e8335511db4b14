"""The backend's aiohttp application and a runner that serves it on a loopback port."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from sim.backend import cdp, control, track_api
from sim.backend.config import BackendConfig
from sim.backend.journeys import JourneyEngine
from sim.backend.limits import RateLimiter
from sim.backend.metrics import Metrics
from sim.backend.push import SenderFactory, UnconfiguredSender
from sim.backend.services import SERVICES, RunClock, Services
from sim.backend.store import Store, StoreClosedError, StoreWriterGoneError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"

ENGINE = web.AppKey("journey_engine", JourneyEngine)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _error_for_path(path: str, status: int, message: str, headers=None) -> web.Response:
    """Build an error in the body format of the API that ``path`` belongs to."""
    if path.startswith(track_api.PREFIX):
        return track_api.error_response(status, [message], headers)
    if path.startswith("/v1/"):
        return cdp.error_response(status, message, headers=headers)
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def protocol_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Convert routing errors and unexpected failures into the protocol's own error body.

    It also counts every response by route, method and status for ``/metrics``. One
    middleware does both, because each middleware adds a coroutine call to every request.
    """
    metrics = request.app[SERVICES].metrics
    try:
        response = await handler(request)
    except web.HTTPMethodNotAllowed as error:
        allowed = ", ".join(sorted(error.allowed_methods))
        log.info("%s %s rejected with 405: allowed %s", request.method, request.path, allowed)
        response = _error_for_path(
            request.path,
            405,
            f"method {request.method} not allowed on {request.path}: use {allowed}",
            headers={"Allow": allowed},
        )
    except web.HTTPNotFound:
        log.info("%s %s rejected with 404: no route", request.method, request.path)
        response = _error_for_path(request.path, 404, f"no route for {request.path}")
    except StoreWriterGoneError as error:
        log.error("%s %s failed: %s", request.method, request.path, error)
        response = _error_for_path(
            request.path,
            500,
            "internal error: the store's writer process exited, so nothing is stored until the "
            "backend restarts; see the backend log",
        )
    except StoreClosedError as error:
        log.warning("%s %s rejected during shutdown: %s", request.method, request.path, error)
        response = _error_for_path(request.path, 503, "the backend is shutting down: retry later")
    except web.HTTPException as error:
        metrics.count_request(_route_name(request), request.method, error.status)
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        response = _error_for_path(request.path, 500, "internal error: see the backend log")
    metrics.count_request(_route_name(request), request.method, response.status)
    return response


def create_app(
    config: BackendConfig, *, sender_factory: SenderFactory | None = None
) -> web.Application:
    """Build the backend app with its store and journey engine, started and stopped with it.

    ``sender_factory`` builds the push sender. Without one, every push fails with the reason
    that no gateways are configured. On cleanup the engine stops and reports every push in
    flight before the store flushes and closes.
    """
    metrics = Metrics()
    store = Store(
        config.db_path,
        batch_max=config.write_batch_max,
        linger_seconds=config.write_linger_seconds,
        on_batch=metrics.observe_batch,
    )
    metrics.queue_depth = lambda: store.queue_depth
    services = Services(
        config=config,
        store=store,
        metrics=metrics,
        limiter=RateLimiter(config.rate_limit_per_second, config.rate_limit_burst),
        clock=RunClock(),
    )

    app = web.Application(middlewares=[protocol_errors])
    app[SERVICES] = services
    track_api.add_routes(app)
    cdp.add_routes(app)
    control.add_routes(app)
    app[ENGINE] = JourneyEngine(services, sender_factory or UnconfiguredSender)
    app.cleanup_ctx.append(_store_lifetime)
    app.cleanup_ctx.append(_engine_lifetime)
    return app


async def _engine_lifetime(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    await engine.start()
    yield
    await engine.close()


async def _store_lifetime(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    services.store.open()
    latest = await services.store.read(control.load_latest_clock)
    if latest is not None:
        services.clock = latest
        log.info("epoch restored from the store: %s", latest.epoch)
    if not services.config.track_credentials:
        log.warning("no Track API credentials configured: every Track API request gets 401")
    if not services.config.cdp_write_keys:
        log.warning("no CDP write keys configured: every CDP request gets 401")
    yield
    await services.store.close()


class BackendServer:
    """A backend app served on one TCP port until ``close`` is awaited."""

    def __init__(
        self,
        config: BackendConfig,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        sender_factory: SenderFactory | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.app = create_app(config, sender_factory=sender_factory)
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Open the store, bind the port and return it (useful when ``port`` was 0)."""
        # NOTE: aiohttp 3.14 drops bytes that arrive after shutdown begins, so a request whose
        # body is still in transit then waits out the whole shutdown timeout and is cancelled
        # without a response. Its write, if any, was never acknowledged.
        #
        # No access log, because its line per request cost about 15% of the backend's CPU time
        # per request in tests/bench/bench_backend.py, and /metrics counts every response.
        self._runner = web.AppRunner(
            self.app, shutdown_timeout=self.config.shutdown_timeout_seconds, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = self._runner.addresses
        self.port = sockets[0][1]
        log.info(
            "backend listening on http://%s:%d (store %s)",
            self.host,
            self.port,
            self.config.db_path,
        )
        return self.port

    async def close(self) -> None:
        """Stop accepting requests, finish those in flight and flush every queued write."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        await runner.cleanup()
        log.info("backend on port %d stopped", self.port)

    async def __aenter__(self) -> BackendServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def serve(
    config: BackendConfig,
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    sender_factory: SenderFactory | None = None,
) -> BackendServer:
    """Start a backend on ``host``:``port`` and return it; ``server.port`` is the bound port.

    The caller stops it with ``await server.close()``, which flushes every write in flight.
    """
    server = BackendServer(config, host, port, sender_factory=sender_factory)
    await server.start()
    return server
