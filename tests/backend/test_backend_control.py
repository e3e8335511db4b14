"""The control endpoint for the run's epoch, health and metrics."""

from __future__ import annotations

import pytest
from backend_harness import CONTROL_TOKEN

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
    [row] = backend.query("SELECT * FROM epochs")
    assert row["time_scale"] == 60.0
    assert row["run_key"] == "run-42"
    assert row["shard_count"] == 4


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
