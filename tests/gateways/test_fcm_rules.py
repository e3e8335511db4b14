"""FCM rules without a server: targets, payload checks, token and fault policies."""

from __future__ import annotations

import json

import pytest

from sim.gateways.fcm_rules import (
    BAD_REQUEST_TYPE,
    FCM_ERROR_TYPE,
    PAYLOAD_LIMIT_BYTES,
    TOPIC_PAYLOAD_LIMIT_BYTES,
    FcmRules,
    message_violations,
)
from sim.gateways.hooks import FaultAction, TokenState
from tests.gateways.fcm_helpers import ScriptedFaults, ScriptedTokens, fcm_token

PROJECT = "shop"


def decide(rules: FcmRules, body: dict | bytes):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    push = rules.push_request(PROJECT, raw, {}, "test-connection", received_at=1.0)
    return push, rules.decide(push, PROJECT)


def test_accepted_send_gets_delivery_id():
    rules = FcmRules(new_message_id=lambda: "m-1")

    push, response = decide(rules, {"message": {"token": fcm_token(1)}})

    assert response.status == 200
    assert response.body == {"name": "projects/shop/messages/m-1"}
    assert response.delivery_id == "m-1"
    assert push.token == fcm_token(1)


def test_topic_recorded_with_prefix():
    push, response = decide(FcmRules(), {"message": {"topic": "deals"}})

    assert response.status == 200
    assert push.token == "/topics/deals"


def test_data_limit_counts_utf8_bytes():
    # "é" is two bytes in UTF-8, so 2048 of them reach the limit with the 1-byte key over it.
    over = {"message": {"token": fcm_token(2), "data": {"k": "é" * (PAYLOAD_LIMIT_BYTES // 2)}}}

    violations = message_violations(over)

    assert any("too big" in description for _, description in violations)


def test_payload_limit_counts_notification_and_data():
    # 3000 bytes of body and 1100 of data, with their keys, are 4105 bytes: over 4096.
    body = {"message": {"token": fcm_token(2), "notification": {"body": "y" * 3000},
                        "data": {"d": "x" * 1100}}}  # fmt: skip

    (violation,) = message_violations(body)

    assert violation[0] == "message"
    assert "its data and notification keys and values are 4105 bytes" in violation[1]
    assert "the limit for a message is 4096 bytes" in violation[1]


def test_android_notification_counts_toward_limit():
    android = {"notification": {"body": "y" * PAYLOAD_LIMIT_BYTES}}
    body = {"message": {"token": fcm_token(2), "android": android}}

    assert any("too big" in description for _, description in message_violations(body))


def test_topic_message_limit_is_2048_bytes():
    # Key "k" (1 byte) plus the value reaches the topic limit exactly, and one byte more is over.
    at_limit = {"message": {"topic": "deals", "data": {"k": "x" * (TOPIC_PAYLOAD_LIMIT_BYTES - 1)}}}
    over = {"message": {"topic": "deals", "data": {"k": "x" * TOPIC_PAYLOAD_LIMIT_BYTES}}}

    assert message_violations(at_limit) == []
    assert "the limit for a topic message is 2048 bytes" in message_violations(over)[0][1]


def test_collapse_key_allowed_in_data():
    body = {"message": {"token": fcm_token(3), "data": {"collapse_key": "cart", "gcm.x": "1"}}}

    assert message_violations(body) == []


def test_allowed_keys_that_look_reserved():
    body = {"message": {"token": fcm_token(3), "data": {"googleish": "1", "from_cart": "1"}}}

    assert message_violations(body) == []


@pytest.mark.parametrize(
    "state, status, code",
    [
        (TokenState.UNKNOWN, 400, "INVALID_ARGUMENT"),
        (TokenState.DEAD, 404, "UNREGISTERED"),
        (TokenState.WRONG_AUDIENCE, 403, "SENDER_ID_MISMATCH"),
        (TokenState.THROTTLED, 429, "QUOTA_EXCEEDED"),
    ],
)
def test_token_states_map_to_fcm_errors(state, status, code):
    tokens = ScriptedTokens()
    token = fcm_token(4)
    tokens.states[token] = state

    _, response = decide(FcmRules(token_policy=tokens), {"message": {"token": token}})

    assert response.status == status
    assert response.reason == code
    assert response.body["error"]["details"] == [{"@type": FCM_ERROR_TYPE, "errorCode": code}]


def test_token_policy_sees_fid():
    tokens = ScriptedTokens()
    fid = "cXyZ0123456789abcdEFgh"
    tokens.states[fid] = TokenState.DEAD

    _, response = decide(FcmRules(token_policy=tokens), {"message": {"fid": fid}})

    assert response.status == 404


def test_topic_skips_token_policy():
    tokens = ScriptedTokens()
    tokens.states["/topics/deals"] = TokenState.DEAD

    _, response = decide(FcmRules(token_policy=tokens), {"message": {"topic": "deals"}})

    assert response.status == 200


def test_fault_runs_before_payload_rules():
    faults = ScriptedFaults()
    token = fcm_token(5)
    faults.actions[token] = FaultAction(status=503, retry_after=3, delay=0.25)

    _, response = decide(FcmRules(fault_policy=faults), {"message": {"token": token, "x": 1}})

    assert response.status == 503
    assert response.reason == "UNAVAILABLE"
    assert response.headers == {"Retry-After": "3"}
    assert response.delay == 0.25


def test_fault_with_named_reason():
    faults = ScriptedFaults()
    token = fcm_token(6)
    faults.actions[token] = FaultAction(status=429, reason="QUOTA_EXCEEDED")

    _, response = decide(FcmRules(fault_policy=faults), {"message": {"token": token}})

    assert response.body["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert response.body["error"]["details"][0]["errorCode"] == "QUOTA_EXCEEDED"


def test_quota_fault_names_project_rate():
    faults = ScriptedFaults()
    throttled, quota = fcm_token(6), fcm_token(8)
    faults.actions[quota] = FaultAction(status=429, reason="QUOTA_EXCEEDED", fault="quota")
    tokens = ScriptedTokens()
    tokens.states[throttled] = TokenState.THROTTLED
    rules = FcmRules(fault_policy=faults, token_policy=tokens)

    _, by_quota = decide(rules, {"message": {"token": quota}})
    _, by_throttle = decide(rules, {"message": {"token": throttled}})

    assert by_quota.body["error"]["message"].startswith("Quota exceeded for the project's")
    assert by_throttle.body["error"]["message"] == (
        "Quota exceeded for sending messages to this device."
    )


def test_fault_with_other_status_uses_plain_error():
    faults = ScriptedFaults()
    token = fcm_token(7)
    faults.actions[token] = FaultAction(status=502)

    _, response = decide(FcmRules(fault_policy=faults), {"message": {"token": token}})

    assert response.status == 502
    assert response.body["error"]["code"] == 502
    assert "details" not in response.body["error"]


def test_delay_alone_keeps_rules():
    faults = ScriptedFaults()
    token = fcm_token(8)
    faults.actions[token] = FaultAction(delay=0.5)

    _, response = decide(FcmRules(fault_policy=faults), {"message": {"token": token}})

    assert response.status == 200
    assert response.delay == 0.5


def test_violations_name_fields():
    body = {"message": {"token": fcm_token(9), "apns": [], "android": {"ttl": "1m"}}}

    _, response = decide(FcmRules(), body)

    violations = response.body["error"]["details"][0]
    assert violations["@type"] == BAD_REQUEST_TYPE
    fields = [violation["field"] for violation in violations["fieldViolations"]]
    assert fields == ["message.android.ttl", "message.apns"]


def test_unknown_request_field_rejected():
    violations = message_violations({"message": {"topic": "a"}, "dry_run": True})

    assert violations[0][1].startswith('Invalid JSON payload received. Unknown name "dry_run"')


def test_deeply_nested_body_is_bad_request():
    _, response = decide(FcmRules(), b"[" * 50_000 + b"]" * 50_000)

    assert response.status == 400
