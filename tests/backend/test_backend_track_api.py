"""Customer.io Track API v1 intake over real HTTP, checked against the SQLite file."""

from __future__ import annotations

import json

import httpx
import pytest
from backend_harness import API_KEY, SITE_ID

IDENTIFY = "/api/v1/customers/{}"
DEVICES = "/api/v1/customers/{}/devices"
EVENTS = "/api/v1/customers/{}/events"


def meta_error(response: httpx.Response) -> str:
    return response.json()["meta"]["error"]


def meta_errors(response: httpx.Response) -> list[str]:
    return response.json()["meta"]["errors"]


def device_body(token: str, platform: str = "ios", **attributes) -> dict:
    return {
        "device": {
            "id": token,
            "platform": platform,
            "last_used": 1_700_000_000,
            "attributes": attributes,
        }
    }


# Authentication


def test_missing_credentials_get_401(backend):
    with backend.client() as client:
        response = client.put(IDENTIFY.format("u1"), json={})
    assert response.status_code == 401
    assert "missing credentials" in meta_error(response)


@pytest.mark.parametrize(
    "auth",
    [(SITE_ID, "wrong-key"), ("wrong-site", API_KEY), ("", "")],
)
def test_wrong_credentials_get_401(backend, auth):
    with backend.client(auth) as client:
        response = client.put(IDENTIFY.format("u1"), json={})
    assert response.status_code == 401
    assert "not valid" in meta_error(response)
    assert backend.profile_of("id", "u1") is None


def test_wrong_key_after_an_accepted_one_gets_401(backend):
    # The backend remembers accepted Authorization headers; a different key is checked anew.
    with backend.track() as client:
        assert client.put(IDENTIFY.format("u1"), json={}).status_code == 200
    with backend.client((SITE_ID, API_KEY + "x")) as client:
        response = client.put(IDENTIFY.format("u2"), json={})
    assert response.status_code == 401
    assert backend.profile_of("id", "u2") is None


def test_bearer_auth_is_rejected(backend):
    with backend.client(headers={"Authorization": "Bearer abc"}) as client:
        response = client.put(IDENTIFY.format("u1"), json={})
    assert response.status_code == 401
    assert "HTTP Basic" in meta_error(response)


# Identify


def test_identify_creates_person(backend, track):
    response = track.put(IDENTIFY.format("u1"), json={"email": "ann@example.com", "plan": "gold"})

    assert response.status_code == 200
    assert response.json() == {}
    rows = backend.query("SELECT * FROM profiles WHERE customer_id = 'u1'")
    assert len(rows) == 1
    assert rows[0]["email"] == "ann@example.com"
    assert json.loads(rows[0]["attributes"]) == {"email": "ann@example.com", "plan": "gold"}
    assert backend.profile_of("email", "ann@example.com") == rows[0]["id"]


def test_identify_updates_and_removes_attributes(backend, track):
    track.put(IDENTIFY.format("u1"), json={"plan": "gold", "city": "Lyon"})
    track.put(IDENTIFY.format("u1"), json={"plan": "silver", "city": None})

    rows = backend.query("SELECT attributes FROM profiles WHERE customer_id = 'u1'")
    assert json.loads(rows[0]["attributes"]) == {"plan": "silver"}


def test_identify_with_empty_body(backend, track):
    response = track.put(IDENTIFY.format("u1"), content=b"")
    assert response.status_code == 200
    assert backend.profile_of("id", "u1") is not None


def test_identify_update_only_skips_unknown(backend, track):
    response = track.put(IDENTIFY.format("ghost"), json={"_update": True, "plan": "gold"})
    assert response.status_code == 200
    assert backend.profile_of("id", "ghost") is None


def test_identify_bad_json(track):
    response = track.put(IDENTIFY.format("u1"), content=b"{not json")
    assert response.status_code == 400
    assert "invalid JSON body" in meta_error(response)


def test_identify_body_not_object(track):
    response = track.put(IDENTIFY.format("u1"), json=["a"])
    assert response.status_code == 400
    assert "expected a JSON object" in meta_error(response)


def test_identify_oversized_id(backend, track):
    response = track.put(IDENTIFY.format("x" * 151), json={})
    assert response.status_code == 400
    assert "151 bytes" in meta_error(response)
    assert backend.query("SELECT COUNT(*) AS n FROM profiles")[0]["n"] == 0


def test_identify_id_limit_counts_bytes(track):
    # 76 two-byte characters are 152 bytes, over the limit though under 150 characters.
    response = track.put(IDENTIFY.format("é" * 76), json={})
    assert response.status_code == 400


def test_identify_oversized_attributes_all_listed(track):
    body = {"a" * 151: 1, "big": "v" * 1001}
    response = track.put(IDENTIFY.format("u1"), json=body)
    assert response.status_code == 400
    errors = meta_errors(response)
    assert len(errors) == 2
    assert any("name" in error and "151 bytes" in error for error in errors)
    assert any("'big'" in error and "1001 bytes" in error for error in errors)


def test_identify_value_at_limit_accepted(track):
    response = track.put(IDENTIFY.format("u1"), json={"bio": "v" * 1000})
    assert response.status_code == 200


def test_identify_wrong_method(track):
    response = track.post(IDENTIFY.format("u1"), json={})
    assert response.status_code == 405
    assert "method POST not allowed" in meta_error(response)
    assert "PUT" in response.headers["Allow"]


def test_unknown_route_gets_meta_404(track):
    response = track.get("/api/v1/nowhere")
    assert response.status_code == 404
    assert "no route" in meta_error(response)


def test_body_over_max_gets_413(make_backend):
    backend = make_backend(max_body_bytes=1000)
    with backend.track() as client:
        response = client.put(IDENTIFY.format("u1"), json={"pad": "x" * 2000})
    assert response.status_code == 413
    assert "1000 bytes" in meta_error(response)


# Devices


def test_register_device(backend, track):
    body = device_body(
        "tok-1",
        push_enabled="true",
        push_enabled_at=1_700_000_000,
        app_version="2.3.0",
        device_os="17.1",
    )
    response = track.put(DEVICES.format("u1"), json=body)

    assert response.status_code == 200
    [device] = backend.query("SELECT * FROM devices")
    assert device["token"] == "tok-1"
    assert device["profile_id"] == backend.profile_of("id", "u1")
    assert device["platform"] == "ios"
    assert device["last_used"] == 1_700_000_000
    assert device["push_enabled"] == 1
    assert device["push_enabled_at"] == 1_700_000_000
    assert device["app_version"] == "2.3.0"
    assert device["os_version"] == "17.1"
    assert device["status"] == "active"
    assert device["registered_at"] > 1_700_000_000


def test_register_device_twice_keeps_one_row(backend, track):
    track.put(DEVICES.format("u1"), json=device_body("tok-1", push_enabled=True))
    track.put(DEVICES.format("u1"), json=device_body("tok-1", push_enabled=False))

    rows = backend.query("SELECT * FROM devices")
    assert len(rows) == 1
    assert rows[0]["push_enabled"] == 0


def test_reregistered_token_moves_to_new_person(backend, track):
    track.put(DEVICES.format("ann"), json=device_body("shared-tok"))
    track.put(DEVICES.format("bob"), json=device_body("shared-tok"))

    [device] = backend.query("SELECT * FROM devices WHERE token = 'shared-tok'")
    assert device["profile_id"] == backend.profile_of("id", "bob")
    history = backend.query("SELECT action FROM device_history ORDER BY id")
    assert [row["action"] for row in history] == ["registered", "moved"]


def test_delete_device(backend, track):
    track.put(DEVICES.format("u1"), json=device_body("tok-1"))
    response = track.delete(DEVICES.format("u1") + "/tok-1")

    assert response.status_code == 200
    [device] = backend.query("SELECT status, status_reason FROM devices")
    assert device["status"] == "deleted"


def test_delete_device_of_other_person_is_noop(backend, track):
    track.put(DEVICES.format("ann"), json=device_body("tok-1"))
    response = track.delete(DEVICES.format("bob") + "/tok-1")

    assert response.status_code == 200
    [device] = backend.query("SELECT status FROM devices")
    assert device["status"] == "active"


def test_delete_unknown_device_is_ok(track):
    response = track.delete(DEVICES.format("nobody") + "/tok-x")
    assert response.status_code == 200


def test_reregister_after_delete_reactivates(backend, track):
    track.put(DEVICES.format("u1"), json=device_body("tok-1"))
    track.delete(DEVICES.format("u1") + "/tok-1")
    track.put(DEVICES.format("u1"), json=device_body("tok-1"))

    [device] = backend.query("SELECT status FROM devices")
    assert device["status"] == "active"


def test_fcm_token_longer_than_id_limit(backend, track):
    token = "dGVzdA:APA91b" + "x" * 150
    response = track.put(DEVICES.format("u1"), json=device_body(token, platform="android"))
    assert response.status_code == 200
    assert backend.query("SELECT platform FROM devices")[0]["platform"] == "android"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "missing field 'device'"),
        ({"device": {"platform": "ios"}}, "missing field 'id'"),
        ({"device": {"id": "t", "platform": "windows"}}, "invalid 'platform'"),
        ({"device": {"id": "t", "platform": "ios", "last_used": "yesterday"}}, "'last_used'"),
        (
            {"device": {"id": "t", "platform": "ios", "attributes": {"push_enabled": "maybe"}}},
            "'push_enabled'",
        ),
        ({"device": {"id": "t", "platform": "ios", "attributes": []}}, "invalid 'attributes'"),
    ],
)
def test_register_device_bad_input(backend, track, body, fragment):
    response = track.put(DEVICES.format("u1"), json=body)
    assert response.status_code == 400
    assert fragment in response.text
    assert backend.query("SELECT COUNT(*) AS n FROM devices")[0]["n"] == 0


def test_register_device_missing_body(track):
    response = track.put(DEVICES.format("u1"))
    assert response.status_code == 400
    assert "missing request body" in meta_error(response)


# Events


def test_track_event(backend, track):
    body = {
        "name": "added_to_cart",
        "data": {"sku": "A1", "cart_id": "c1"},
        "timestamp": 1_700_000_123,
        "id": "01HEVENT",
    }
    response = track.post(EVENTS.format("u1"), json=body)

    assert response.status_code == 200
    [event] = backend.query("SELECT * FROM events")
    assert event["profile_id"] == backend.profile_of("id", "u1")
    assert event["name"] == "added_to_cart"
    assert json.loads(event["data"]) == {"sku": "A1", "cart_id": "c1"}
    assert event["timestamp"] == 1_700_000_123
    assert event["dedupe_id"] == "01HEVENT"


def test_track_event_deduplicated_by_id(backend, track):
    body = {"name": "order_completed", "id": "evt-1", "data": {"order_id": "o1"}}
    first = track.post(EVENTS.format("u1"), json=body)
    second = track.post(EVENTS.format("u1"), json=body)
    other_person = track.post(EVENTS.format("u2"), json=body)

    assert first.status_code == second.status_code == other_person.status_code == 200
    assert backend.query("SELECT COUNT(*) AS n FROM events")[0]["n"] == 1
    # The repeated id did not create its person either.
    assert backend.profile_of("id", "u2") is None


def test_events_without_id_are_not_deduplicated(backend, track):
    for _ in range(2):
        track.post(EVENTS.format("u1"), json={"name": "product_viewed"})
    assert backend.query("SELECT COUNT(*) AS n FROM events")[0]["n"] == 2


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "missing field 'name'"),
        ({"name": ""}, "invalid 'name'"),
        ({"name": 5}, "invalid 'name'"),
        ({"name": "n" * 101}, "'name' too long: 101 bytes"),
        ({"name": "x", "data": "text"}, "invalid 'data'"),
        ({"name": "x", "data": {"blob": "b" * (100 * 1024)}}, "'data' too large"),
        ({"name": "x", "timestamp": "2024-01-01"}, "invalid 'timestamp'"),
        ({"name": "x", "timestamp": True}, "invalid 'timestamp'"),
        ({"name": "x", "id": "i" * 151}, "'id' too long"),
    ],
)
def test_track_event_bad_input(backend, track, body, fragment):
    response = track.post(EVENTS.format("u1"), json=body)
    assert response.status_code == 400
    assert fragment in response.text
    assert backend.query("SELECT COUNT(*) AS n FROM events")[0]["n"] == 0


def test_track_event_several_errors(track):
    response = track.post(EVENTS.format("u1"), json={"data": [], "timestamp": "x"})
    assert response.status_code == 400
    assert len(meta_errors(response)) == 3


# Anonymous events and stitching


def test_anonymous_event_stored_on_anonymous_profile(backend, track):
    response = track.post(
        "/api/v1/events", json={"name": "product_viewed", "anonymous_id": "anon-1", "id": "e1"}
    )
    assert response.status_code == 200
    anonymous_profile = backend.profile_of("anonymous_id", "anon-1")
    [event] = backend.query("SELECT * FROM events")
    assert event["profile_id"] == anonymous_profile
    assert event["anonymous_id"] == "anon-1"


def test_anonymous_event_merged_into_identified_person(backend, track):
    track.post(
        "/api/v1/events",
        json={"name": "added_to_cart", "anonymous_id": "anon-1", "data": {"cart_id": "c9"}},
    )
    track.put(DEVICES.format("anon-owner"), json=device_body("unrelated"))
    anonymous_profile = backend.profile_of("anonymous_id", "anon-1")

    response = track.put(IDENTIFY.format("ann"), json={"anonymous_id": "anon-1"})

    assert response.status_code == 200
    person = backend.profile_of("id", "ann")
    assert backend.profile_of("anonymous_id", "anon-1") == person
    [event] = backend.query("SELECT profile_id FROM events WHERE name = 'added_to_cart'")
    assert event["profile_id"] == person
    [merged] = backend.query("SELECT merged_into FROM profiles WHERE id = ?", (anonymous_profile,))
    assert merged["merged_into"] == person
    [merge] = backend.query("SELECT * FROM merges")
    assert (merge["primary_profile"], merge["secondary_profile"]) == (person, anonymous_profile)
    assert merge["reason"] == "identify_anonymous"


def test_anonymous_event_after_identify_goes_to_person(backend, track):
    track.put(IDENTIFY.format("ann"), json={"anonymous_id": "anon-1"})
    track.post("/api/v1/events", json={"name": "product_viewed", "anonymous_id": "anon-1"})

    [event] = backend.query("SELECT profile_id FROM events")
    assert event["profile_id"] == backend.profile_of("id", "ann")


def test_anonymous_id_of_other_person_not_stolen(backend, track):
    track.put(IDENTIFY.format("ann"), json={"anonymous_id": "shared-anon"})
    track.put(IDENTIFY.format("bob"), json={"anonymous_id": "shared-anon"})
    assert backend.profile_of("anonymous_id", "shared-anon") == backend.profile_of("id", "ann")


def test_anonymous_event_without_anonymous_id(backend, track):
    response = track.post("/api/v1/events", json={"name": "Application Opened"})
    assert response.status_code == 200
    [event] = backend.query("SELECT profile_id FROM events")
    assert event["profile_id"] is None


def test_anonymous_event_bad_input(backend, track):
    response = track.post("/api/v1/events", json={"name": "x", "anonymous_id": 7})
    assert response.status_code == 400
    assert "invalid 'anonymous_id'" in meta_error(response)


def test_anonymous_event_wrong_method(track):
    response = track.get("/api/v1/events")
    assert response.status_code == 405
    assert "not allowed" in meta_error(response)


# Merges


def test_merge_customers_by_id_and_email(backend, track):
    track.put(IDENTIFY.format("ann"), json={"email": "ann@example.com", "plan": "gold"})
    track.put(IDENTIFY.format("ann-old"), json={"plan": "free", "city": "Oslo"})
    track.post(EVENTS.format("ann-old"), json={"name": "order_completed"})
    track.put(DEVICES.format("ann-old"), json=device_body("old-tok"))
    primary = backend.profile_of("id", "ann")

    response = track.post(
        "/api/v1/merge_customers",
        json={"primary": {"email": "ann@example.com"}, "secondary": {"id": "ann-old"}},
    )

    assert response.status_code == 200
    assert backend.profile_of("id", "ann-old") == primary
    [event] = backend.query("SELECT profile_id FROM events")
    assert event["profile_id"] == primary
    [device] = backend.query("SELECT profile_id FROM devices")
    assert device["profile_id"] == primary
    [profile] = backend.query("SELECT attributes FROM profiles WHERE id = ?", (primary,))
    attributes = json.loads(profile["attributes"])
    assert attributes["plan"] == "gold"
    assert attributes["city"] == "Oslo"


def test_merge_customers_by_cio_id(backend, track):
    track.put(IDENTIFY.format("a"), json={})
    track.put(IDENTIFY.format("b"), json={})
    a, b = backend.profile_of("id", "a"), backend.profile_of("id", "b")

    response = track.post(
        "/api/v1/merge_customers",
        json={"primary": {"cio_id": str(a)}, "secondary": {"cio_id": str(b)}},
    )
    assert response.status_code == 200
    assert backend.profile_of("id", "b") == a


def test_merge_customers_unknown_person(backend, track):
    track.put(IDENTIFY.format("a"), json={})
    response = track.post(
        "/api/v1/merge_customers", json={"primary": {"id": "a"}, "secondary": {"id": "nobody"}}
    )
    assert response.status_code == 404
    assert "no customer found with id 'nobody'" in meta_error(response)
    assert backend.query("SELECT COUNT(*) AS n FROM merges")[0]["n"] == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "missing field 'primary'"),
        ({"primary": {"id": "a"}}, "missing field 'secondary'"),
        ({"primary": {"id": "a", "email": "e"}, "secondary": {"id": "b"}}, "exactly one"),
        ({"primary": {"id": 3}, "secondary": {"id": "b"}}, "expected a string"),
        ({"primary": {"id": "a" * 151}, "secondary": {"id": "b"}}, "too long"),
    ],
)
def test_merge_customers_bad_input(track, body, fragment):
    response = track.post("/api/v1/merge_customers", json=body)
    assert response.status_code == 400
    assert fragment in response.text


# Push metrics


def test_push_metrics_stored_once(backend, track):
    body = {
        "delivery_id": "dlv-1",
        "event": "opened",
        "device_id": "tok-1",
        "timestamp": 1_700_000_500,
    }
    assert track.post("/api/v1/push/events", json=body).status_code == 200
    assert track.post("/api/v1/push/events", json=body).status_code == 200
    delivered = dict(body, event="delivered")
    assert track.post("/api/v1/push/events", json=delivered).status_code == 200

    rows = backend.query("SELECT * FROM delivery_metrics ORDER BY metric")
    assert [row["metric"] for row in rows] == ["delivered", "opened"]
    assert rows[1]["device_token"] == "tok-1"
    assert rows[1]["timestamp"] == 1_700_000_500


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"event": "opened"}, "missing field 'delivery_id'"),
        ({"delivery_id": "d", "event": "clicked"}, "invalid 'event'"),
        ({"delivery_id": "d"}, "invalid 'event'"),
        ({"delivery_id": "d", "event": "opened", "timestamp": "now"}, "invalid 'timestamp'"),
    ],
)
def test_push_metrics_bad_input(track, body, fragment):
    response = track.post("/api/v1/push/events", json=body)
    assert response.status_code == 400
    assert fragment in response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/v1/customers/u1"),
        ("PUT", "/api/v1/customers/u1/devices"),
        ("DELETE", "/api/v1/customers/u1/devices/tok"),
        ("POST", "/api/v1/customers/u1/events"),
        ("POST", "/api/v1/events"),
        ("POST", "/api/v1/merge_customers"),
        ("POST", "/api/v1/push/events"),
    ],
)
def test_every_route_requires_credentials(backend, method, path):
    with backend.client((SITE_ID, "wrong-key")) as client:
        response = client.request(method, path, json={"name": "x"})
    assert response.status_code == 401
    assert "not valid" in meta_error(response)


def test_device_last_used_defaults_to_now(backend, track):
    track.put(DEVICES.format("u1"), json={"device": {"id": "tok-1", "platform": "ios"}})
    [device] = backend.query("SELECT last_used, registered_at FROM devices")
    assert device["last_used"] == pytest.approx(device["registered_at"], abs=1.0)


def test_email_path_finds_person_by_email(backend, track):
    track.put(IDENTIFY.format("ann"), json={"email": "ann@example.com"})
    track.post(EVENTS.format("ann@example.com"), json={"name": "order_completed"})

    [event] = backend.query("SELECT profile_id FROM events")
    assert event["profile_id"] == backend.profile_of("id", "ann")
    assert backend.profile_of("id", "ann@example.com") is None
