"""Protocol adapters: what each SDK call becomes on the wire."""

from __future__ import annotations

from sim.driver.cdp_batch import DEVICE_DELETED, DEVICE_UPDATED, FLUSH_AT, CdpBatchAdapter
from sim.driver.http import _encode_body
from sim.driver.track_v1 import TrackV1Adapter
from sim.driver.wire import event_ulid
from sim.model.ports import SdkCall, SharedProperties
from tests.driver.model_calls import model_calls

WALL0 = 1_800_000_000.0


def call(method: str, seq: int, *, user_id=None, token=None, event=None, properties=None,
         attributes=None, device="d1") -> SdkCall:  # fmt: skip
    return SdkCall(
        at=float(seq), group_id=7, seq=seq, method=method, device=device, person="p1",
        anonymous_id="anon-1", user_id=user_id, token=token, event=event,
        properties=properties, attributes=attributes,
    )  # fmt: skip


def wall(sdk_call: SdkCall) -> float:
    return WALL0 + sdk_call.at


def test_track_v1_identify_and_event():
    adapter = TrackV1Adapter("site", "key", wall)
    (identify,) = adapter.requests_for(call("identify", 1, user_id="u1", attributes={"a": 1}))
    assert (identify.method, identify.path, identify.name) == ("PUT", "/api/v1/customers/u1",
                                                               "identify")  # fmt: skip
    assert identify.json == {"a": 1, "anonymous_id": "anon-1"}
    assert identify.headers["Authorization"].startswith("Basic ")

    event = call("track", 2, user_id="u1", event="added_to_cart", properties={"cart_id": "c"})
    (request,) = adapter.requests_for(event)
    assert request.path == "/api/v1/customers/u1/events"
    assert request.name == "event:added_to_cart"
    assert request.json["id"] == event_ulid(int(wall(event) * 1000), 7, 2)


def test_track_v1_anonymous_event():
    adapter = TrackV1Adapter("site", "key", wall)
    (request,) = adapter.requests_for(call("anonymous_track", 1, event="product_viewed"))
    assert request.path == "/api/v1/events"
    assert request.json["anonymous_id"] == "anon-1"


def test_track_v1_holds_anonymous_token_until_identify():
    adapter = TrackV1Adapter("site", "key", wall)
    held = call("register_token", 1, token="t1", attributes={"platform": "ios",
                                                             "push_enabled": True})  # fmt: skip
    assert adapter.requests_for(held) == []
    identify, device = adapter.requests_for(call("identify", 2, user_id="u1"))
    assert identify.name == "identify"
    assert device.path == "/api/v1/customers/u1/devices"
    assert device.json["device"]["id"] == "t1"
    assert device.json["device"]["platform"] == "ios"
    assert device.json["device"]["attributes"] == {"push_enabled": True}


def test_track_v1_push_metric():
    adapter = TrackV1Adapter("site", "key", wall)
    metric = call("push_metric", 3, token="t1", event="opened", properties={"delivery_id": "d9"})
    (request,) = adapter.requests_for(metric)
    assert request.path == "/api/v1/push/events"
    assert request.json["delivery_id"] == "d9"
    assert request.json["event"] == "opened"


def test_event_ids_stable_and_ulid_shaped():
    first = event_ulid(1_700_000_000_000, 3, 4)
    assert first == event_ulid(1_700_000_000_000, 3, 4)
    assert first != event_ulid(1_700_000_000_000, 3, 5)
    assert len(first) == 26


def test_event_id_known_value():
    # Pinned, so that a faster encoding cannot change the ids a backend deduplicates by.
    assert event_ulid(1_764_892_800_123, 123, 45) == "01KBNWXX3VY2DB55F2GQ7HEZ2D"
    # The time is the first 10 digits, in Crockford base32.
    assert event_ulid(0, 1, 1)[:10] == "0000000000"


def test_cdp_device_messages():
    adapter = CdpBatchAdapter("write", wall)
    register = adapter.message_for(
        call("register_token", 1, token="t1", attributes={"platform": "android"})
    )
    assert register["event"] == DEVICE_UPDATED
    assert register["context"]["device"] == {"token": "t1", "type": "android"}
    assert "userId" not in register
    delete = adapter.message_for(call("delete_token", 2, token="t1", user_id="u1"))
    assert delete["event"] == DEVICE_DELETED
    assert delete["userId"] == "u1"


def test_cdp_batches_at_twenty():
    adapter = CdpBatchAdapter("write", wall)
    batches = []
    for seq in range(1, FLUSH_AT * 2 + 4):
        batch = adapter.add(call("anonymous_track", seq, event="product_viewed"))
        if batch is not None:
            batches.append(batch)
    assert len(batches) == 2
    request, calls = batches[0]
    assert request.path == "/v1/b"
    assert len(request.json["batch"]) == FLUSH_AT
    assert [c.seq for c in calls] == list(range(1, FLUSH_AT + 1))
    rest = adapter.flush("d1", sent_at=WALL0)
    assert rest is not None
    assert len(rest[0].json["batch"]) == 3


def test_cdp_batches_per_device():
    adapter = CdpBatchAdapter("write", wall)
    adapter.add(call("anonymous_track", 1, event="product_viewed", device="a"))
    adapter.add(call("anonymous_track", 2, event="product_viewed", device="b"))
    assert adapter.is_first("a")
    assert adapter.is_first("b")
    request, calls = adapter.flush("a", sent_at=WALL0)
    assert [c.device for c in calls] == ["a"]


def test_track_v1_event_text_is_encoded_json():
    calls = model_calls()
    adapter = TrackV1Adapter("site", "key", lambda sdk_call: WALL0 + sdk_call.at / 1080.0)

    with_text = 0
    for sdk_call in calls:
        for request in adapter.requests_for(sdk_call):
            if request.text is None:
                continue
            with_text += 1
            assert request.text == _encode_body(request.json)
    product_views = sum(1 for sdk_call in calls if sdk_call.event == "product_viewed")
    assert product_views > 500
    assert with_text == product_views


def test_track_v1_non_ascii_properties_are_encoded():
    properties = SharedProperties({"sku": "SKU-1", "category": "Küche", "price": 9.5})
    adapter = TrackV1Adapter("site", "key", wall)
    (request,) = adapter.requests_for(
        call("anonymous_track", 1, event="product_viewed", properties=properties)
    )
    assert request.text is None
    assert '"category":"K\\u00fcche"' in _encode_body(request.json)
