"""The sender's pure parts: pruning rules, classifiers, Retry-After, backoff, payloads, metrics."""

from __future__ import annotations

import email.utils
import logging
import random

import pytest

from sim.backend.sender import settings_from_gateway_config
from sim.backend.sender_apns import apns_id_for
from sim.backend.sender_jobs import PushJob, PushService
from sim.backend.sender_metrics import LogLimiter, SenderMetrics
from sim.backend.sender_outcomes import (
    Action,
    classify_apns,
    classify_fcm,
    parse_fcm_error,
    prune_after_apns_gone,
    prune_after_fcm_gone,
)
from sim.backend.sender_payloads import PayloadTooLarge, apns_payload, fcm_message
from sim.backend.sender_retry import RetryPolicy, parse_retry_after
from sim.formats.gateway_config import ApnsEndpoint, FcmEndpoint, GatewayConfig
from sim.gateways.fcm_rules import bad_request_response, fcm_error_response, google_error

DIED_MS = 1_800_000_000_000  # wall ms at which APNs learned the token was invalid


@pytest.mark.parametrize(
    ("registered_at", "timestamp_ms", "prune"),
    [
        (DIED_MS / 1000 - 3600, DIED_MS, True),  # registered an hour before it died
        (DIED_MS / 1000 - 0.001, DIED_MS, True),  # 1 ms before
        (DIED_MS / 1000, DIED_MS, False),  # registered at that very ms
        (DIED_MS / 1000 + 5, DIED_MS, False),  # registered again afterwards
        (None, DIED_MS, False),  # no device has the token any more
        (DIED_MS / 1000, None, True),  # no timestamp given
    ],
)
def test_prune_after_apns_gone(registered_at, timestamp_ms, prune):
    assert prune_after_apns_gone(registered_at, timestamp_ms) is prune


@pytest.mark.parametrize(
    ("registered_at", "sent_at", "prune"),
    [
        (1000.0, 2000.0, True),  # registered before the send
        (2000.0, 2000.0, True),  # registered at the send
        (2000.5, 2000.0, False),  # registered again after the send
        (None, 2000.0, False),  # no device has the token any more
    ],
)
def test_prune_after_fcm_gone(registered_at, sent_at, prune):
    assert prune_after_fcm_gone(registered_at, sent_at) is prune


@pytest.mark.parametrize(
    ("status", "reason", "action"),
    [
        (200, "", Action.DELIVER),
        (410, "Unregistered", Action.GONE),
        (410, "ExpiredToken", Action.GONE),
        (400, "BadDeviceToken", Action.PRUNE),
        (400, "DeviceTokenNotForTopic", Action.PRUNE),
        (429, "TooManyRequests", Action.RETRY),
        (500, "InternalServerError", Action.RETRY),
        (503, "ServiceUnavailable", Action.RETRY),
        (503, "Shutdown", Action.RETRY),
        (403, "ExpiredProviderToken", Action.FAIL),
        (400, "BadTopic", Action.FAIL),
        (413, "PayloadTooLarge", Action.FAIL),
        (None, "connection_error", Action.RETRY),
        (None, "timeout", Action.FAIL),
    ],
)
def test_classify_apns(status, reason, action):
    assert classify_apns(status, reason) is action


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("UNREGISTERED", Action.GONE),
        ("SENDER_ID_MISMATCH", Action.PRUNE),
        ("INVALID_ARGUMENT", Action.PRUNE),  # the mock's message names the registration token
        ("QUOTA_EXCEEDED", Action.RETRY),
        ("UNAVAILABLE", Action.RETRY),
        ("INTERNAL", Action.RETRY),
        ("THIRD_PARTY_AUTH_ERROR", Action.FAIL),
    ],
)
def test_classify_fcm_error_codes(code, action):
    response = fcm_error_response(code)
    error = parse_fcm_error(response.status, response.body)

    assert error.code == code
    assert classify_fcm(response.status, error.code, error) is action


def test_classify_fcm_token_field_violation():
    body = google_error(
        400,
        "The registration token is not valid",
        [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "message.token", "description": "Invalid token"}],
            }
        ],
    )
    error = parse_fcm_error(400, body)

    assert error.token_field
    assert classify_fcm(400, error.code, error) is Action.PRUNE


def test_classify_fcm_payload_violation_fails():
    response = bad_request_response([("message.data", "Invalid value at 'message.data'")])
    error = parse_fcm_error(response.status, response.body)

    assert error.code == "INVALID_ARGUMENT"
    assert not error.token_field
    assert classify_fcm(400, error.code, error) is Action.FAIL


def test_classify_fcm_expired_access_token():
    body = google_error(
        401,
        "Request had invalid authentication credentials.",
        [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_EXPIRED"}],
    )
    error = parse_fcm_error(401, body)

    assert error.auth_reason == "ACCESS_TOKEN_EXPIRED"
    assert classify_fcm(401, error.code, error) is Action.REAUTHENTICATE


@pytest.mark.parametrize("body", [None, "text", {"error": "x"}, {"error": {"details": [1]}}])
def test_parse_fcm_error_tolerates_bad_bodies(body):
    error = parse_fcm_error(502, body)

    assert error.code == "502"
    assert classify_fcm(502, error.code, error) is Action.FAIL


def test_classify_fcm_no_response():
    assert classify_fcm(None, "connection_error") is Action.RETRY
    assert classify_fcm(None, "oauth_error") is Action.RETRY
    assert classify_fcm(None, "timeout") is Action.FAIL


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "wait"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),
        (None, None),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
    ],
)
def test_parse_retry_after(value, wait):
    assert parse_retry_after(value, NOW) == wait


def test_backoff_equal_jitter_bounds():
    policy = RetryPolicy(base=0.5, cap=4.0)
    rng = random.Random(1)

    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (80, 4.0)]:
        waits = [policy.backoff(retry, rng) for _ in range(200)]
        assert min(waits) >= ceiling / 2
        assert max(waits) <= ceiling
        # Equal jitter spreads the waits across the upper half of the range.
        assert min(waits) < ceiling * 0.6
        assert max(waits) > ceiling * 0.9


@pytest.mark.parametrize(
    "options", [{"max_attempts": 0}, {"base": -1.0}, {"cap": -1.0}, {"max_elapsed": -1.0}]
)
def test_retry_policy_rejects_bad_values(options):
    with pytest.raises(ValueError, match="invalid"):
        RetryPolicy(**options)


def _job(**fields) -> PushJob:
    fields.setdefault("title", "Hi")
    fields.setdefault("body", "Your cart")
    return PushJob(PushService.APNS, "a" * 64, 0.0, link="shop://cart/1", **fields)


def test_apns_payload_without_title():
    payload = apns_payload(_job(title="", delivery_id="d", delivery_token="t"))

    assert payload == {
        "aps": {"alert": {"title": "", "body": "Your cart"}, "sound": "default"},
        "CIO": {"push": {"link": "shop://cart/1", "body": "Your cart"}},
        "CIO-Delivery-ID": "d",
        "CIO-Delivery-Token": "t",
    }


def test_payloads_reject_oversized_text():
    job = _job(body="é" * 2100)  # 4200 bytes of UTF-8

    with pytest.raises(PayloadTooLarge, match="4096-byte limit"):
        apns_payload(job)
    with pytest.raises(PayloadTooLarge, match="4096-byte limit"):
        fcm_message(job)


def test_fcm_message_values_are_strings():
    message = fcm_message(_job())["message"]

    assert all(isinstance(value, str) for value in message["data"].values())
    assert message["android"] == {"priority": "high"}


def test_metrics_dict_and_prometheus():
    metrics = SenderMetrics()
    metrics.inc("sends_total", service="fcm", outcome="delivered", reason="")
    metrics.inc("sends_total", 2, service="apns", outcome="failed", reason='odd "one"')
    metrics.set("queue_depth", 3, service="fcm")

    assert metrics.value("sends_total") == 3
    assert metrics.value("sends_total", service="apns") == 2
    assert metrics.as_dict()["queue_depth"] == [{"labels": {"service": "fcm"}, "value": 3}]
    text = metrics.render_prometheus()
    assert "# TYPE pushsim_sender_sends_total counter\n" in text
    assert "# TYPE pushsim_sender_queue_depth gauge\n" in text
    assert (
        'pushsim_sender_sends_total{outcome="failed",reason="odd \\"one\\"",service="apns"} 2\n'
        in text
    )
    assert 'pushsim_sender_queue_depth{service="fcm"} 3\n' in text


def test_log_limiter_suppresses_repeats(caplog):
    now = [0.0]
    limiter = LogLimiter(
        logging.getLogger("limiter-test"), burst=2, window=10.0, clock=lambda: now[0]
    )

    with caplog.at_level(logging.INFO, logger="limiter-test"):
        for number in range(5):
            limiter.log(logging.INFO, "retry", "retry %d", number)
        now[0] = 11.0
        limiter.log(logging.INFO, "retry", "retry %d", 5)

    assert caplog.messages == [
        "retry 0",
        "retry 1",
        "3 more 'retry' messages were suppressed in the last 11 s",
        "retry 5",
    ]


def test_settings_from_gateway_config(tmp_path):
    config = GatewayConfig(
        ca_cert="/run/ca.pem",
        apns=ApnsEndpoint(
            tls_port=2197,
            tls_no_alpn_port=2198,
            key_path="/run/AuthKey_X.p8",
            key_id="X",
            team_id="T",
            topic="com.example.shop",
        ),
        fcm=FcmEndpoint(
            tls_port=8443,
            project_id="shop",
            service_account="/run/sa.json",
            token_uri="https://127.0.0.1:8443/token",
        ),
    )
    path = tmp_path / "gateways.json"
    config.write(path)

    apns, fcm = settings_from_gateway_config(path)

    assert (apns.host, apns.port, apns.ca_cert) == ("127.0.0.1", 2198, "/run/ca.pem")
    assert (apns.key_id, apns.team_id, apns.topic) == ("X", "T", "com.example.shop")
    assert fcm.send_url == "https://127.0.0.1:8443/v1/projects/shop/messages:send"
    assert fcm.token_uri == "https://127.0.0.1:8443/token"
    assert fcm.ca_cert == "/run/ca.pem"


def test_settings_from_empty_gateway_config():
    assert settings_from_gateway_config(GatewayConfig()) == (None, None)


def test_apns_id_for_job_ids():
    uuid_id = "0b8f8a9e-54d3-4c6b-9c55-2b0f4e1f7a10"

    assert apns_id_for(uuid_id) == uuid_id
    assert apns_id_for(uuid_id.upper()) == uuid_id
    assert apns_id_for("cart-42-step-1") == apns_id_for("cart-42-step-1")
    assert apns_id_for("cart-42-step-1") != apns_id_for("cart-42-step-2")
    assert len(apns_id_for("cart-42-step-1")) == 36
