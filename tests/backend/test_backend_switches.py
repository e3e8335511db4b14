"""Naive behaviours that a rehearsal switches on to show what they cost."""

from __future__ import annotations


def device(token: str) -> dict:
    return {"device": {"id": token, "platform": "android"}}


def test_anonymous_merge_on_by_default(backend, track):
    track.post("/api/v1/events", json={"name": "added_to_cart", "anonymous_id": "anon-1"})
    track.put("/api/v1/customers/ann", json={"anonymous_id": "anon-1"})
    [event] = backend.query("SELECT profile_id FROM events")
    assert event["profile_id"] == backend.profile_of("id", "ann")


def test_no_anonymous_merge_strands_events(make_backend):
    backend = make_backend(no_anonymous_merge=True)
    with backend.track() as track:
        track.post("/api/v1/events", json={"name": "added_to_cart", "anonymous_id": "anon-1"})
        response = track.put("/api/v1/customers/ann", json={"anonymous_id": "anon-1"})
        track.post("/api/v1/events", json={"name": "product_viewed", "anonymous_id": "anon-1"})

    assert response.status_code == 200
    person = backend.profile_of("id", "ann")
    anonymous_profile = backend.profile_of("anonymous_id", "anon-1")
    assert anonymous_profile != person
    events = backend.query("SELECT profile_id FROM events")
    assert [row["profile_id"] for row in events] == [anonymous_profile, anonymous_profile]
    assert backend.query("SELECT COUNT(*) AS n FROM merges")[0]["n"] == 0


def test_no_anonymous_merge_on_cdp_identify(make_backend):
    backend = make_backend(no_anonymous_merge=True)
    with backend.cdp() as cdp:
        cdp.post("/v1/track", json={"anonymousId": "anon-2", "event": "added_to_cart"})
        cdp.post("/v1/identify", json={"userId": "bob", "anonymousId": "anon-2"})
    assert backend.profile_of("anonymous_id", "anon-2") != backend.profile_of("id", "bob")


def test_several_devices_per_person_by_default(backend, track):
    track.put("/api/v1/customers/ann/devices", json=device("phone"))
    track.put("/api/v1/customers/ann/devices", json=device("tablet"))
    statuses = backend.query("SELECT status FROM devices")
    assert [row["status"] for row in statuses] == ["active", "active"]


def test_single_device_per_person_replaces_old(make_backend):
    backend = make_backend(single_device_per_person=True)
    with backend.track() as track:
        track.put("/api/v1/customers/ann/devices", json=device("phone"))
        track.put("/api/v1/customers/ann/devices", json=device("tablet"))
        track.put("/api/v1/customers/bob/devices", json=device("bob-phone"))

    rows = backend.query("SELECT token, status, status_reason FROM devices ORDER BY token")
    by_token = {row["token"]: (row["status"], row["status_reason"]) for row in rows}
    assert by_token["phone"] == ("deleted", "replaced")
    assert by_token["tablet"] == ("active", None)
    assert by_token["bob-phone"] == ("active", None)


def test_single_device_per_person_on_cdp(make_backend):
    backend = make_backend(single_device_per_person=True)
    with backend.cdp() as cdp:
        for token in ("old", "new"):
            cdp.post(
                "/v1/track",
                json={
                    "userId": "ann",
                    "event": "Device Created or Updated",
                    "context": {"device": {"token": token, "type": "android"}},
                },
            )
    rows = backend.query("SELECT token, status FROM devices ORDER BY token")
    assert [(row["token"], row["status"]) for row in rows] == [
        ("new", "active"),
        ("old", "deleted"),
    ]
