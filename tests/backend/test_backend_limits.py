"""The per-credential rate limit on both intake APIs."""

from __future__ import annotations

from backend_harness import API_KEY, SITE_ID, WRITE_KEY

from sim.backend.config import TrackCredential

BURST = 3


def test_track_rate_limit_answers_429(make_backend):
    backend = make_backend(rate_limit_per_second=0.5, rate_limit_burst=BURST)
    with backend.track() as client:
        statuses = [client.put("/api/v1/customers/u1", json={}).status_code for _ in range(BURST)]
        limited = client.put("/api/v1/customers/u1", json={"plan": "gold"})

    assert statuses == [200] * BURST
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert "rate limit exceeded for site id" in limited.json()["meta"]["error"]
    assert backend.query("SELECT attributes FROM profiles")[0]["attributes"] == "{}"


def test_rate_limit_is_per_credential(make_backend):
    second = TrackCredential("site-2", "key-2")
    backend = make_backend(
        rate_limit_per_second=0.5,
        rate_limit_burst=1,
        track_credentials=(TrackCredential(SITE_ID, API_KEY), second),
    )
    with backend.track() as first_client, backend.client(("site-2", "key-2")) as second_client:
        assert first_client.put("/api/v1/customers/a", json={}).status_code == 200
        assert first_client.put("/api/v1/customers/a", json={}).status_code == 429
        assert second_client.put("/api/v1/customers/b", json={}).status_code == 200


def test_cdp_rate_limit_answers_429(make_backend):
    backend = make_backend(rate_limit_per_second=0.5, rate_limit_burst=1)
    with backend.cdp() as client:
        first = client.post("/v1/track", json={"userId": "u1", "event": "x"})
        limited = client.post("/v1/track", json={"userId": "u1", "event": "x"})

    assert first.status_code == 200
    assert limited.status_code == 429
    assert limited.json()["success"] is False
    assert WRITE_KEY not in limited.text
    assert "CDP write key #0" in limited.json()["error"]
    assert backend.query("SELECT COUNT(*) AS n FROM events")[0]["n"] == 1


def test_rate_limit_counted_in_metrics(make_backend):
    backend = make_backend(rate_limit_per_second=0.5, rate_limit_burst=1)
    with backend.track() as client:
        client.put("/api/v1/customers/u1", json={})
        client.put("/api/v1/customers/u1", json={})
    with backend.client() as client:
        text = client.get("/metrics").text
    assert 'pushsim_backend_rate_limited_total{api="track"} 1' in text


def test_rate_limit_off_by_default(backend, track):
    statuses = {track.put("/api/v1/customers/u1", json={}).status_code for _ in range(50)}
    assert statuses == {200}
