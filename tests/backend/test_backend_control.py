"""The control endpoint for the run's epoch, health and metrics."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from backend_harness import CONTROL_TOKEN

from sim.backend.epoch_follower import follow_gateways_epoch
from sim.backend.services import SERVICES
from sim.formats.gateway_config import GatewayConfig
from sim.scenario.dump import journey_to_plain

EPOCH = {"wall_t0": 1_800_000_000.0, "sim_t0": 1_700_000_000.0, "time_scale": 60.0}
BEARER = {"Authorization": f"Bearer {CONTROL_TOKEN}"}


def test_healthz(backend):
    with backend.client() as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_epoch_defaults_to_wall_time(backend):
    with backend.client(headers=BEARER) as client:
        response = client.get("/control/epoch")
    assert response.status_code == 200
    assert response.json()["time_scale"] == 1.0
    assert response.json()["wall_t0"] == response.json()["sim_t0"]


def test_post_epoch_stored_and_returned(backend):
    body = dict(EPOCH, run_key="run-42", shard_count=4)
    with backend.client(headers=BEARER) as client:
        posted = client.post("/control/epoch", json=body)
        current = client.get("/control/epoch")

    assert posted.status_code == 200
    assert current.json() == body
    # The response names the journeys the backend runs and their settings, which a driver
    # compares with its own, the naive switches that are on (none here), which a report names,
    # and what earlier runs left in the store (nothing here).
    journeys = [j.name for j in backend.config.journeys]
    settings = {j.name: journey_to_plain(j) for j in backend.config.journeys}
    earlier = {"epochs": 0, "profiles": 0, "devices": 0, "warning": None}
    assert posted.json() == dict(
        body, journeys=journeys, journey_settings=settings, naive=[], earlier=earlier
    )
    [row] = backend.query("SELECT * FROM epochs")
    assert row["time_scale"] == 60.0
    assert row["run_key"] == "run-42"
    assert row["shard_count"] == 4


def test_epoch_warns_of_earlier_runs_state(backend, caplog):
    with backend.client(headers=BEARER) as client:
        client.post("/control/epoch", json=EPOCH)
    with backend.track() as track:
        assert track.put("/api/v1/customers/u1", json={}).status_code == 200
        device = {"device": {"id": "token-of-run-1", "platform": "ios", "last_used": 1}}
        assert track.put("/api/v1/customers/u1/devices", json=device).status_code == 200
        assert track.put("/api/v1/customers/u2", json={}).status_code == 200

    with caplog.at_level("WARNING", logger="sim.backend"), backend.client(headers=BEARER) as client:
        posted = client.post("/control/epoch", json=dict(EPOCH, wall_t0=EPOCH["wall_t0"] + 600))
    earlier = posted.json()["earlier"]

    assert posted.status_code == 200
    assert (earlier["epochs"], earlier["profiles"], earlier["devices"]) == (1, 2, 1)
    assert "2 profiles and 1 active device tokens from 1 earlier run(s)" in earlier["warning"]
    assert "new --db" in earlier["warning"]
    logged = [r.getMessage() for r in caplog.records if "earlier run(s)" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].startswith(f"new run at wall_t0={EPOCH['wall_t0'] + 600}")


def test_epoch_survives_restart(backend):
    with backend.client(headers=BEARER) as client:
        client.post("/control/epoch", json=EPOCH)
    backend.restart()
    with backend.client(headers=BEARER) as client:
        current = client.get("/control/epoch").json()
    assert current["time_scale"] == 60.0
    assert current["sim_t0"] == EPOCH["sim_t0"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {CONTROL_TOKEN}"}],
)
def test_epoch_requires_bearer_token(backend, headers):
    with backend.client(headers=headers) as client:
        response = client.post("/control/epoch", json=EPOCH)
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]
    assert backend.query("SELECT COUNT(*) AS n FROM epochs")[0]["n"] == 0


def test_epoch_disabled_without_token(make_backend):
    backend = make_backend(control_token=None)
    with backend.client(headers=BEARER) as client:
        response = client.post("/control/epoch", json=EPOCH)
    assert response.status_code == 401
    assert "disabled" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"sim_t0": 0}, "missing key 'wall_t0'"),
        ({"wall_t0": 0}, "missing key 'sim_t0'"),
        (dict(EPOCH, time_scale=0), "time_scale"),
        (dict(EPOCH, time_scale="fast"), "invalid epoch"),
        (dict(EPOCH, shard_count=0), "shard_count"),
        (dict(EPOCH, shard_count=True), "shard_count"),
        (dict(EPOCH, run_key=""), "run_key"),
        ([1, 2], "JSON object"),
    ],
)
def test_epoch_bad_input(backend, body, fragment):
    with backend.client(headers=BEARER) as client:
        response = client.post("/control/epoch", json=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_epoch_bad_json(backend):
    with backend.client(headers=BEARER) as client:
        response = client.post("/control/epoch", content=b"{")
    assert response.status_code == 400
    assert "invalid JSON body" in response.json()["error"]


def test_epoch_wrong_method(backend):
    with backend.client(headers=BEARER) as client:
        response = client.delete("/control/epoch")
    assert response.status_code == 405
    assert "not allowed" in response.json()["error"]


def test_metrics_count_requests_by_route(backend, track):
    track.put("/api/v1/customers/u1", json={})
    track.put("/api/v1/customers/u1", json={"x": "v" * 2000})
    track.post("/api/v1/customers/u1/events", json={"name": "product_viewed"})

    with backend.client() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    route = 'route="/api/v1/customers/{identifier}",method="PUT"'
    assert f'pushsim_backend_requests_total{{{route},status="200"}} 1' in text
    assert f'pushsim_backend_requests_total{{{route},status="400"}} 1' in text
    assert 'pushsim_backend_events_stored_total{api="track"} 1' in text
    assert "pushsim_backend_write_queue_depth 0" in text
    assert "pushsim_backend_write_batch_size_count" in text


def test_metrics_never_show_credentials(backend, track):
    track.put("/api/v1/customers/u1", json={})
    with backend.client() as client:
        text = client.get("/metrics").text
    assert backend.config.track_credentials[0].api_key not in text


@pytest.fixture
def gateways_run():
    """Serve GET /control/run on loopback: 404 until ``server.run`` is set, then that body."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server calls
            self.server.authorizations.append(self.headers.get("Authorization"))
            run = self.server.run
            body = json.dumps(run if run is not None else {"error": "no run configured yet"})
            self.send_response(200 if run is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.run = None
    server.authorizations = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def current_epoch(backend) -> dict:
    with backend.client(headers=BEARER) as client:
        return client.get("/control/epoch").json()


def test_epoch_followed_from_gateways(backend, gateways_run):
    gateways = GatewayConfig(
        control_url=f"http://127.0.0.1:{gateways_run.server_address[1]}", control_token="gw-token"
    )
    services = backend.server.app[SERVICES]
    follower = asyncio.run_coroutine_threadsafe(
        follow_gateways_epoch(services, gateways, interval=0.05), backend._loop
    )
    try:
        time.sleep(0.3)
        before = current_epoch(backend)
        gateways_run.run = {"epoch": EPOCH, "shard_count": 2, "mode": "registry"}
        deadline = time.monotonic() + 5.0
        while current_epoch(backend)["time_scale"] != 60.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        after = current_epoch(backend)
    finally:
        follower.cancel()

    assert before["time_scale"] == 1.0
    assert after == dict(EPOCH, run_key=None, shard_count=2)
    assert set(gateways_run.authorizations) == {"Bearer gw-token"}
    assert backend.query("SELECT COUNT(*) AS n FROM epochs")[0]["n"] == 1


def test_epoch_follower_names_connect_failure(backend, caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    gateways = GatewayConfig(control_url=f"http://127.0.0.1:{closed}", control_token="gw-token")
    services = backend.server.app[SERVICES]

    with caplog.at_level("WARNING", logger="sim.backend"):
        follower = asyncio.run_coroutine_threadsafe(
            follow_gateways_epoch(services, gateways, interval=0.05), backend._loop
        )
        try:
            time.sleep(0.3)
        finally:
            follower.cancel()

    messages = [record.getMessage() for record in caplog.records]
    warnings = [message for message in messages if "reading the run's epoch" in message]
    assert len(warnings) == 1
    assert f"at http://127.0.0.1:{closed} failed (ClientConnectorError: " in warnings[0]
    assert "ConnectionKey" not in warnings[0]
