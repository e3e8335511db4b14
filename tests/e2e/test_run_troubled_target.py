"""``pushsim run --target`` against an HTTP service that rejects or delays every SDK call."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest
from aiohttp import web

from tests.e2e.run_helpers import pushsim_run

pytestmark = pytest.mark.slow

# Eight simulated hours are 20 wall seconds at the default time scale of 1440.
SHORT = ("--set", "clock.duration=8h", "--set", "population.installs=700")
# Wall seconds the slow stand-in takes to respond. With two lanes that is at most 8 requests a
# second, against the scenario's hundreds.
SLOW_RESPONSE_S = 0.25


async def reject(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=404, text="not found")


async def respond_slowly(request: web.Request) -> web.Response:
    await request.read()
    await asyncio.sleep(SLOW_RESPONSE_S)
    return web.json_response({})


@contextmanager
def stand_in_target(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> Iterator[str]:
    """Serve every request with ``handler`` on a free loopback port, and yield the URL."""
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="stand-in-target", daemon=True)
    thread.start()
    assert started.wait(10), "the stand-in target did not start within 10 s"
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_target_answering_404_fails_gate(tmp_path):
    run_dir = tmp_path / "run"
    with stand_in_target(reject) as url:
        result = pushsim_run(run_dir, "minimal", "--target", url, *SHORT, timeout=180)

    # A gate failed (1); the run itself is whole, so it is not partial (3).
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "the run is partial" not in result.stderr
    assert "FAIL  sdk_error_rate <= 0.01  (value 1, threshold 0.01)" in result.stdout

    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["partial"] is False
    errors = summary["sdk_errors"]
    assert errors["sent"] > 1000
    assert errors["failed_responses"] == {"404": errors["sent"]}
    rejected = f"{errors['sent']:,}"
    assert f"{rejected} failed (100.0%) by response: 404: {rejected}" in result.stdout

    # The progress lines count Locust's failed requests as they happen.
    assert re.search(r"req/s  failed [\d,]+", result.stdout), result.stdout[-3000:]
    # And once nearly every request failed, a warning names the cause while the run goes on.
    warning = re.search(r"warning: the backend rejected ([\d,]+) of \1 SDK requests so far "
                        r"\(404: \1\); (.*)", result.stderr)  # fmt: skip
    assert warning, result.stderr[-3000:]
    assert warning.group(2).startswith("the backend has no such route: check that --target")


def test_slow_target_warns_of_dropped_calls(tmp_path):
    run_dir = tmp_path / "run"
    with stand_in_target(respond_slowly) as url:
        result = pushsim_run(
            run_dir, "minimal", "--target", url, "--users", "2", *SHORT, timeout=180
        )

    output = result.stdout + result.stderr
    # The minimal scenario's gate on dropped calls fails the run.
    assert result.returncode == 1, output[-3000:]
    assert re.search(r"FAIL  generator_drops <= 0.01  \(value 0\.9\d+", result.stdout), output
    # The progress lines count the dropped calls, and a warning names the fixes mid-run.
    assert re.search(r"req/s  dropped [\d,]+", result.stdout), result.stdout[-3000:]
    warning = re.search(r"warning: the driver dropped ([\d,]+) of ([\d,]+) SDK calls so far",
                        result.stderr)  # fmt: skip
    assert warning, result.stderr[-3000:]
    assert "add --users" in result.stderr

    # The report judges the generator as the warning did.
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    generator = summary["generator"]
    assert generator["fell_behind"] is True
    assert generator["dropped"] >= int(warning.group(1).replace(",", ""))
