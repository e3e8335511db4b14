"""Segment-compatible CDP intake over real HTTP, checked against the SQLite file."""

from __future__ import annotations

import json

import pytest
from backend_harness import WRITE_KEY

STRICT = {"X-Strict-Mode": "1"}


def count(backend, table: str) -> int:
    return backend.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]


def device_created(user_id: str, token: str, **extra) -> dict:
    message = {
        "type": "track",
        "event": "Device Created or Updated",
        "userId": user_id,
        "messageId": f"dev-{user_id}-{token}",
        "context": {
            "device": {"token": token, "type": "ios"},
            "app": {"version": "5.1.0"},
            "os": {"version": "17.2"},
        },
        "properties": {"push_enabled": "true"},
    }
    message.update(extra)
    return message


# Authentication and routing


def test_missing_write_key_gets_401(backend):
    with backend.client() as client:
        response = client.post("/v1/batch", json={"batch": []})
    assert response.status_code == 401
    assert response.json()["success"] is False
    assert "missing credentials" in response.json()["error"]


def test_wrong_write_key_gets_401(backend):
    with backend.client(("not-the-key", "")) as client:
        response = client.post("/v1/track", json={"userId": "u", "event": "x"})
    assert response.status_code == 401
    assert "not valid" in response.json()["error"]
    assert count(backend, "events") == 0


def test_write_key_with_password_accepted(backend):
    with backend.client((WRITE_KEY, "ignored")) as client:
        response = client.post("/v1/track", json={"userId": "u", "event": "x"})
    assert response.status_code == 200


def test_wrong_method_gets_405(cdp):
    response = cdp.get("/v1/batch")
    assert response.status_code == 405
    assert "method GET not allowed" in response.json()["error"]


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/identify", "/v1/track"])
def test_bad_json_gets_400(cdp, path):
    response = cdp.post(path, content=b"{oops")
    assert response.status_code == 400
    assert "invalid JSON body" in response.json()["error"]


def test_batch_without_list_gets_400(cdp):
    response = cdp.post("/v1/batch", json={"messages": []})
    assert response.status_code == 400
    assert "missing field 'batch'" in response.json()["error"]


# Identify and track


def test_identify_stores_traits(backend, cdp):
    response = cdp.post(
        "/v1/identify",
        json={"userId": "u1", "traits": {"email": "u1@example.com", "first_name": "Ann"}},
    )
    assert response.status_code == 200
    assert response.json() == {"success": True}
    [profile] = backend.query("SELECT * FROM profiles")
    assert json.loads(profile["attributes"])["first_name"] == "Ann"
    assert backend.profile_of("email", "u1@example.com") == profile["id"]


def test_identify_with_both_ids_stitches(backend, cdp):
    cdp.post(
        "/v1/track",
        json={"anonymousId": "anon-7", "event": "added_to_cart", "properties": {"cart_id": "c1"}},
    )
    anonymous_profile = backend.profile_of("anonymous_id", "anon-7")

    response = cdp.post("/v1/identify", json={"userId": "u7", "anonymousId": "anon-7"})

    assert response.status_code == 200
    person = backend.profile_of("id", "u7")
    assert person != anonymous_profile
    assert backend.profile_of("anonymous_id", "anon-7") == person
    [event] = backend.query("SELECT profile_id FROM events")
    assert event["profile_id"] == person


def test_track_stores_event(backend, cdp):
    message = {
        "userId": "u1",
        "event": "checkout_started",
        "properties": {"cart_id": "c1", "cart_value": 42.5},
        "timestamp": "2024-03-01T12:00:00Z",
        "messageId": "m-1",
    }
    response = cdp.post("/v1/track", json=message)

    assert response.status_code == 200
    [event] = backend.query("SELECT * FROM events")
    assert event["name"] == "checkout_started"
    assert event["source"] == "cdp"
    assert json.loads(event["data"]) == {"cart_id": "c1", "cart_value": 42.5}
    assert event["timestamp"] == 1_709_294_400
    assert event["dedupe_id"] == "m-1"


def test_track_corrects_device_clock_skew(backend, cdp):
    # The device clock runs 100 s fast: sentAt - originalTimestamp is the true delay of 5 s.
    message = {
        "userId": "u1",
        "event": "product_viewed",
        "originalTimestamp": "2030-01-01T00:01:35Z",
        "sentAt": "2030-01-01T00:01:40Z",
    }
    cdp.post("/v1/track", json=message)
    [event] = backend.query("SELECT timestamp, received_at FROM events")
    assert event["received_at"] - event["timestamp"] == pytest.approx(5.0, abs=0.5)


def test_batch_mixes_types(backend, cdp):
    batch = [
        {"type": "identify", "userId": "u1", "traits": {"plan": "gold"}, "messageId": "a"},
        {"type": "track", "userId": "u1", "event": "product_viewed", "messageId": "b"},
        {"type": "screen", "userId": "u1", "name": "Home", "messageId": "c"},
    ]
    response = cdp.post("/v1/b", json={"batch": batch})
    assert response.status_code == 200
    assert count(backend, "events") == 1
    assert count(backend, "profiles") == 1


def test_message_id_deduplicates(backend, cdp):
    message = {"type": "track", "userId": "u1", "event": "order_completed", "messageId": "dup"}
    cdp.post("/v1/batch", json={"batch": [message, message]})
    cdp.post("/v1/track", json=message)
    assert count(backend, "events") == 1
    assert count(backend, "cdp_messages") == 1


def test_message_id_deduplicates_identify(backend, cdp):
    first = {"userId": "u1", "traits": {"plan": "gold"}, "messageId": "id-1"}
    cdp.post("/v1/identify", json=first)
    cdp.post("/v1/identify", json=dict(first, traits={"plan": "free"}))
    [profile] = backend.query("SELECT attributes FROM profiles")
    assert json.loads(profile["attributes"]) == {"plan": "gold"}


def test_numeric_user_id_accepted(backend, cdp):
    response = cdp.post("/v1/track", json={"userId": 42, "event": "x"})
    assert response.status_code == 200
    assert backend.profile_of("id", "42") is not None


# Devices and delivery events


def test_device_created_registers_token(backend, cdp):
    response = cdp.post("/v1/batch", json={"batch": [device_created("u1", "tok-a")]})

    assert response.status_code == 200
    [device] = backend.query("SELECT * FROM devices")
    assert device["token"] == "tok-a"
    assert device["profile_id"] == backend.profile_of("id", "u1")
    assert device["platform"] == "ios"
    assert device["push_enabled"] == 1
    assert device["app_version"] == "5.1.0"
    assert device["os_version"] == "17.2"
    assert count(backend, "events") == 0


def test_device_permission_from_context(backend, cdp):
    message = device_created("u1", "tok-a", properties={})
    message["context"]["device"]["push_enabled"] = False
    cdp.post("/v1/track", json=message)
    assert backend.query("SELECT push_enabled FROM devices")[0]["push_enabled"] == 0


def test_device_moves_to_new_user(backend, cdp):
    cdp.post("/v1/track", json=device_created("ann", "tok-a"))
    cdp.post("/v1/track", json=device_created("bob", "tok-a"))
    [device] = backend.query("SELECT profile_id FROM devices")
    assert device["profile_id"] == backend.profile_of("id", "bob")


def test_anonymous_device_follows_identify(backend, cdp):
    message = device_created("ignored", "tok-anon")
    del message["userId"]
    message["anonymousId"] = "anon-3"
    cdp.post("/v1/track", json=message)
    cdp.post("/v1/identify", json={"userId": "u3", "anonymousId": "anon-3"})

    [device] = backend.query("SELECT profile_id FROM devices")
    assert device["profile_id"] == backend.profile_of("id", "u3")


def test_device_deleted(backend, cdp):
    cdp.post("/v1/track", json=device_created("u1", "tok-a"))
    deleted = {
        "userId": "u1",
        "event": "Device Deleted",
        "context": {"device": {"token": "tok-a", "type": "ios"}},
    }
    response = cdp.post("/v1/track", json=deleted)
    assert response.status_code == 200
    assert backend.query("SELECT status FROM devices")[0]["status"] == "deleted"


def test_device_event_without_token_dropped(backend, cdp):
    message = device_created("u1", "tok-a")
    del message["context"]["device"]["token"]
    response = cdp.post("/v1/track", json=message)
    assert response.status_code == 200
    assert count(backend, "devices") == 0


def test_device_event_without_token_strict(backend, cdp):
    message = device_created("u1", "tok-a")
    del message["context"]["device"]["token"]
    response = cdp.post("/v1/track", json=message, headers=STRICT)
    assert response.status_code == 400
    assert "context.device.token" in response.json()["error"]


def test_report_delivery_event(backend, cdp):
    message = {
        "userId": "u1",
        "event": "Report Delivery Event",
        "properties": {"deliveryId": "dlv-9", "metric": "opened", "recipient": "tok-a"},
        "timestamp": "2024-03-01T12:00:00Z",
    }
    response = cdp.post("/v1/track", json=message)
    assert response.status_code == 200
    [metric] = backend.query("SELECT * FROM delivery_metrics")
    assert metric["delivery_id"] == "dlv-9"
    assert metric["metric"] == "opened"
    assert metric["device_token"] == "tok-a"
    assert metric["source"] == "cdp"


# Validation, strict mode and size limits


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ({"type": "track", "event": "x"}, "missing 'userId' and 'anonymousId'"),
        ({"type": "track", "userId": "u"}, "missing 'event'"),
        ({"type": "track", "userId": "u", "event": "e" * 101}, "'event' too long"),
        ({"type": "track", "userId": "u" * 151, "event": "x"}, "'userId' too long"),
        ({"type": "track", "userId": "u", "event": "x", "properties": []}, "'properties'"),
        ({"type": "track", "userId": "u", "event": "x", "timestamp": "soon"}, "'timestamp'"),
        ({"type": "track", "userId": "u", "event": "x", "timestamp": "2024-03-01T12:00"}, "UTC"),
        ({"type": "alien", "userId": "u"}, "invalid 'type'"),
        ({"type": "identify", "userId": "u", "traits": {"t": "v" * 1001}}, "value too long"),
        (
            {"type": "track", "userId": "u", "event": "Report Delivery Event", "properties": {}},
            "deliveryId",
        ),
    ],
)
def test_invalid_message_strict_gets_400(backend, cdp, message, fragment):
    response = cdp.post("/v1/batch", json={"batch": [message]}, headers=STRICT)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert len(errors) == 1
    assert errors[0].startswith("batch[0]: ")
    assert fragment in errors[0]
    assert count(backend, "events") == 0


def test_invalid_message_lenient_dropped(backend, cdp):
    batch = [
        {"type": "track", "event": "no ids"},
        {"type": "track", "userId": "u1", "event": "kept"},
    ]
    response = cdp.post("/v1/batch", json={"batch": batch})
    assert response.status_code == 200
    assert response.json() == {"success": True}
    [event] = backend.query("SELECT name FROM events")
    assert event["name"] == "kept"


def test_strict_batch_applies_nothing(backend, cdp):
    batch = [
        {"type": "track", "userId": "u1", "event": "valid"},
        {"type": "track", "event": "no ids"},
    ]
    response = cdp.post("/v1/batch", json={"batch": batch}, headers=STRICT)
    assert response.status_code == 400
    assert count(backend, "events") == 0


def test_oversized_message_in_batch(backend, cdp):
    big = {"type": "track", "userId": "u1", "event": "big", "properties": {"p": "x" * 33_000}}
    small = {"type": "track", "userId": "u1", "event": "small"}

    lenient = cdp.post("/v1/batch", json={"batch": [big, small]})
    assert lenient.status_code == 200
    assert [row["name"] for row in backend.query("SELECT name FROM events")] == ["small"]

    strict = cdp.post("/v1/batch", json={"batch": [big, small]}, headers=STRICT)
    assert strict.status_code == 400
    assert "message too large" in strict.json()["errors"][0]


def test_oversized_single_call(backend, cdp):
    message = {"userId": "u1", "event": "big", "properties": {"p": "x" * 33_000}}

    lenient = cdp.post("/v1/track", json=message)
    assert lenient.status_code == 200
    assert lenient.json() == {"success": True}

    strict = cdp.post("/v1/track", json=message, headers=STRICT)
    assert strict.status_code == 400
    assert "32768 bytes" in strict.json()["error"]
    assert count(backend, "events") == 0


def test_oversized_batch(backend, cdp):
    messages = [
        {"type": "track", "userId": "u1", "event": "e", "properties": {"p": "x" * 20_000}}
        for _ in range(30)
    ]
    lenient = cdp.post("/v1/batch", json={"batch": messages})
    assert lenient.status_code == 200

    strict = cdp.post("/v1/batch", json={"batch": messages}, headers=STRICT)
    assert strict.status_code == 400
    assert "512000 bytes" in strict.json()["error"]
    assert count(backend, "events") == 0

    # The connection stays usable after an oversized body was discarded.
    after = cdp.post("/v1/track", json={"userId": "u1", "event": "after"})
    assert after.status_code == 200
    assert count(backend, "events") == 1


def test_strict_config_without_header(make_backend):
    backend = make_backend(cdp_strict=True)
    with backend.cdp() as client:
        response = client.post("/v1/track", json={"event": "no ids"})
    assert response.status_code == 400


def test_dropped_messages_counted_in_metrics(backend, cdp):
    cdp.post("/v1/batch", json={"batch": [{"type": "track", "event": "no ids"}]})
    text = backend.client().get("/metrics").text
    assert 'pushsim_backend_dropped_total{reason="invalid_message"} 1' in text


def test_unsupported_content_is_still_json_error(cdp):
    response = cdp.post("/v1/identify", content="[1, 2]")
    assert response.status_code == 400
    assert response.json()["success"] is False


def test_json_error_body_shape(cdp):
    response = cdp.post("/v1/batch", content=b"not json")
    assert set(response.json()) == {"success", "error"}


def test_batch_level_sent_at_and_context(backend, cdp):
    # The device clock runs ahead; the batch's sentAt lets the backend undo that skew.
    batch = {
        "batch": [
            {
                "type": "track",
                "userId": "u1",
                "event": "Device Created or Updated",
                "originalTimestamp": "2030-01-01T00:00:50Z",
            }
        ],
        "sentAt": "2030-01-01T00:01:00Z",
        "context": {"device": {"token": "tok-batch", "type": "android"}},
    }
    response = cdp.post("/v1/batch", json=batch)

    assert response.status_code == 200
    [device] = backend.query("SELECT * FROM devices")
    assert device["token"] == "tok-batch"
    assert device["platform"] == "android"
    # The message was stamped 10 s before it arrived; the registration counts from the stamp.
    assert device["updated_at"] - device["last_used"] == pytest.approx(10.0, abs=0.5)
    assert device["registered_at"] == pytest.approx(device["last_used"])


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/b", "/v1/identify", "/v1/track"])
def test_every_route_requires_write_key(backend, path):
    with backend.client(("wrong", "")) as client:
        response = client.post(path, json={"batch": [], "userId": "u", "event": "x"})
    assert response.status_code == 401
    assert response.json()["success"] is False


def test_alias_merges_previous_id(backend, cdp):
    cdp.post("/v1/track", json={"userId": "old-id", "event": "order_completed"})
    cdp.post("/v1/track", json={"anonymousId": "anon-5", "event": "product_viewed"})

    for previous_id in ("old-id", "anon-5"):
        response = cdp.post(
            "/v1/batch",
            json={"batch": [{"type": "alias", "previousId": previous_id, "userId": "new-id"}]},
        )
        assert response.status_code == 200

    person = backend.profile_of("id", "new-id")
    assert backend.profile_of("id", "old-id") == person
    assert backend.profile_of("anonymous_id", "anon-5") == person
    owners = {row["profile_id"] for row in backend.query("SELECT profile_id FROM events")}
    assert owners == {person}
    reasons = [row["reason"] for row in backend.query("SELECT reason FROM merges")]
    assert reasons == ["alias", "alias"]


def test_alias_without_previous_id_strict(cdp):
    message = {"type": "alias", "userId": "new-id"}
    response = cdp.post("/v1/batch", json={"batch": [message]}, headers=STRICT)
    assert response.status_code == 400
    assert "previousId" in response.json()["errors"][0]
