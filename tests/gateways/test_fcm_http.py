"""Raw HTTP checks of the FCM gateway with httpx, over HTTP/2 and HTTP/1.1 on one TLS port."""

from __future__ import annotations

import asyncio
import json
import ssl
import time

import httpx
import pytest

from sim.gateways.fcm_rules import BAD_REQUEST_TYPE, ERROR_INFO_TYPE, FCM_ERROR_TYPE
from sim.gateways.hooks import FaultAction, TokenState
from tests.gateways.fcm_helpers import FcmEnv, fcm_token

HTTP_VERSIONS = [pytest.param(True, id="h2"), pytest.param(False, id="http1")]


@pytest.fixture(scope="module")
def bearer(fcm_env: FcmEnv) -> str:
    return fcm_env.access_token()


@pytest.fixture(params=HTTP_VERSIONS)
def client(request, fcm_env: FcmEnv, bearer: str):
    context = ssl.create_default_context(cafile=str(fcm_env.credentials.ca_cert))
    http2 = request.param
    with httpx.Client(
        http1=not http2,
        http2=http2,
        verify=context,
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=10,
    ) as session:
        session.expected_version = "HTTP/2" if http2 else "HTTP/1.1"
        yield session


def send(
    client: httpx.Client, env: FcmEnv, body, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    response = client.post(env.send_url(), content=content, headers=headers)
    assert response.http_version == client.expected_version
    return response


def error_of(response: httpx.Response) -> dict:
    return response.json()["error"]


def detail_types(error: dict) -> list[str]:
    return [detail["@type"] for detail in error.get("details", [])]


def fcm_error_code(error: dict) -> str | None:
    for detail in error.get("details", []):
        if detail["@type"] == FCM_ERROR_TYPE:
            return detail["errorCode"]
    return None


def test_send_returns_message_name(client, fcm):
    token = fcm_token(1)

    response = send(client, fcm, {"message": {"token": token, "data": {"cart_id": "c1"}}})

    assert response.status_code == 200
    name = response.json()["name"]
    assert name.startswith(f"projects/{fcm.project}/messages/")
    request, outcome = fcm.sink.records[-1]
    assert request.token == token
    assert request.audience == fcm.project
    assert outcome.status == 200
    assert outcome.delivery_id == name.rsplit("/", 1)[1]
    assert "authorization" not in request.headers


@pytest.mark.parametrize(
    "target",
    [
        {"topic": "deals"},
        {"topic": "/topics/deals"},
        {"condition": "'deals' in topics && 'shoes' in topics"},
        {"fid": "cXyZ0123456789abcdEFgh"},
    ],
    ids=["topic", "topic-prefixed", "condition", "fid"],
)
def test_send_accepts_each_target(client, fcm, target):
    response = send(client, fcm, {"message": {**target, "notification": {"title": "Hi"}}})

    assert response.status_code == 200
    assert "name" in response.json()


# (case, how to provoke it, HTTP status, error.status, detail @type, FCM errorCode)
ERROR_TABLE = [
    ("unknown-token", "token:UNKNOWN", 400, "INVALID_ARGUMENT", FCM_ERROR_TYPE, "INVALID_ARGUMENT"),
    ("malformed-token", "malformed", 400, "INVALID_ARGUMENT", FCM_ERROR_TYPE, "INVALID_ARGUMENT"),
    ("bad-payload", "payload", 400, "INVALID_ARGUMENT", BAD_REQUEST_TYPE, None),
    ("unregistered", "token:DEAD", 404, "NOT_FOUND", FCM_ERROR_TYPE, "UNREGISTERED"),
    (
        "sender-id-mismatch",
        "token:WRONG_AUDIENCE",
        403,
        "PERMISSION_DENIED",
        FCM_ERROR_TYPE,
        "SENDER_ID_MISMATCH",
    ),
    (
        "quota-exceeded",
        "token:THROTTLED",
        429,
        "RESOURCE_EXHAUSTED",
        FCM_ERROR_TYPE,
        "QUOTA_EXCEEDED",
    ),
    ("unavailable", "fault:503", 503, "UNAVAILABLE", FCM_ERROR_TYPE, "UNAVAILABLE"),
    ("internal", "fault:500", 500, "INTERNAL", FCM_ERROR_TYPE, "INTERNAL"),
    (
        "third-party-auth",
        "fault:401",
        401,
        "UNAUTHENTICATED",
        FCM_ERROR_TYPE,
        "THIRD_PARTY_AUTH_ERROR",
    ),
    ("no-access-token", "no-auth", 401, "UNAUTHENTICATED", ERROR_INFO_TYPE, None),
]


@pytest.mark.parametrize(
    "provoke, status, canonical, detail_type, error_code",
    [row[1:] for row in ERROR_TABLE],
    ids=[row[0] for row in ERROR_TABLE],
)
def test_send_error_table(client, fcm, provoke, status, canonical, detail_type, error_code):
    token = fcm_token(2)
    message: dict = {"token": token}
    headers = {}
    kind, _, value = provoke.partition(":")
    if kind == "token":
        fcm.tokens.states[token] = TokenState[value]
    elif kind == "fault":
        fcm.faults.actions[token] = FaultAction(status=int(value))
    elif kind == "malformed":
        message["token"] = "not-a-registration-token"
    elif kind == "payload":
        message["android"] = {"priority": "URGENT"}
    elif kind == "no-auth":
        headers["Authorization"] = ""

    response = send(client, fcm, {"message": message}, headers=headers)

    assert response.status_code == status
    error = error_of(response)
    assert error["code"] == status
    assert error["status"] == canonical
    assert detail_type in detail_types(error)
    assert fcm_error_code(error) == error_code
    assert fcm.sink.records[-1][1].status == status
    assert fcm.sink.records[-1][1].delivery_id is None


def test_fault_sets_retry_after(client, fcm):
    token = fcm_token(3)
    fcm.faults.actions[token] = FaultAction(status=503, retry_after=7)

    response = send(client, fcm, {"message": {"token": token}})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert fcm.sink.records[-1][1].retry_after == 7


def test_fault_delay_blocks_only_its_request(fcm, bearer):
    slow, fast = fcm_token(4), fcm_token(5)
    fcm.faults.actions[slow] = FaultAction(delay=1.0)
    context = ssl.create_default_context(cafile=str(fcm.credentials.ca_cert))
    headers = {"Authorization": f"Bearer {bearer}"}

    async def timed_send(session: httpx.AsyncClient, token: str, wait: float) -> float:
        await asyncio.sleep(wait)
        started = time.monotonic()
        response = await session.post(fcm.send_url(), json={"message": {"token": token}})
        assert response.status_code == 200
        return time.monotonic() - started

    async def both() -> tuple[float, float]:
        # Both streams share one HTTP/2 connection, so the server must interleave them.
        async with httpx.AsyncClient(http2=True, verify=context, headers=headers) as session:
            return await asyncio.gather(
                timed_send(session, slow, 0.0), timed_send(session, fast, 0.1)
            )

    slow_elapsed, fast_elapsed = asyncio.run(both())

    assert slow_elapsed >= 1.0
    assert fast_elapsed < 0.5


def test_validate_only_is_not_delivered(client, fcm):
    response = send(client, fcm, {"validate_only": True, "message": {"token": fcm_token(6)}})

    assert response.status_code == 200
    assert response.json()["name"] == f"projects/{fcm.project}/messages/fake_message_id"
    outcome = fcm.sink.records[-1][1]
    assert outcome.delivery_id is None
    assert outcome.extra == {"validate_only": "true"}


def test_validate_only_still_checks_token(client, fcm):
    token = fcm_token(7)
    fcm.tokens.states[token] = TokenState.DEAD

    response = send(client, fcm, {"validate_only": True, "message": {"token": token}})

    assert response.status_code == 404
    assert fcm_error_code(error_of(response)) == "UNREGISTERED"


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"token": fcm_token(8), "topic": "deals"},
        {"fid": "cXyZ0123456789abcdEFgh", "token": fcm_token(8)},
        {"topic": "deals", "condition": "'deals' in topics"},
    ],
    ids=["none", "token-and-topic", "fid-and-token", "topic-and-condition"],
)
def test_send_needs_exactly_one_target(client, fcm, message):
    response = send(client, fcm, {"message": message})

    assert response.status_code == 400
    error = error_of(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert detail_types(error) == [BAD_REQUEST_TYPE]
    assert "exactly one of token, topic, condition or fid" in error["message"]


def test_data_limit_is_4096_bytes(client, fcm):
    token = fcm_token(9)
    # Key "k" (1 byte) plus a 4095-byte value is exactly at the limit.
    at_limit = {"message": {"token": token, "data": {"k": "x" * 4095}}}
    over_limit = {"message": {"token": token, "data": {"k": "x" * 4096}}}

    assert send(client, fcm, at_limit).status_code == 200
    response = send(client, fcm, over_limit)

    assert response.status_code == 400
    assert "too big" in error_of(response)["message"]


def test_data_values_must_be_strings(client, fcm):
    response = send(client, fcm, {"message": {"token": fcm_token(10), "data": {"count": 3}}})

    assert response.status_code == 400
    violations = error_of(response)["details"][0]["fieldViolations"]
    assert violations[0]["field"] == "message.data[count]"


@pytest.mark.parametrize(
    "key", ["from", "message_type", "google.sent_time", "gcm.notification.body"]
)
def test_data_rejects_reserved_keys(client, fcm, key):
    response = send(client, fcm, {"message": {"token": fcm_token(11), "data": {key: "v"}}})

    assert response.status_code == 400
    assert "reserved" in error_of(response)["message"]


@pytest.mark.parametrize(
    "android, accepted",
    [
        ({"priority": "HIGH", "ttl": "3.5s"}, True),
        ({"priority": "NORMAL", "ttl": "86400s", "collapse_key": "cart"}, True),
        ({"priority": "high"}, True),
        ({"priority": "URGENT"}, False),
        ({"ttl": "3.5"}, False),
        ({"ttl": 60}, False),
        ({"ttl": "2419201s"}, False),
        ({"notification": {"channel_id": "offers"}}, True),
        ({"bogus": 1}, False),
    ],
    ids=[
        "high",
        "normal",
        "lowercase-priority",
        "unknown-priority",
        "ttl-no-suffix",
        "ttl-number",
        "ttl-over-4w",
        "notification",
        "unknown-field",
    ],
)
def test_android_config_checks(client, fcm, android, accepted):
    body = {"message": {"token": fcm_token(12), "android": android}}

    response = send(client, fcm, body)

    assert (response.status_code == 200) is accepted, response.text


def test_notification_fields_checked(client, fcm):
    good = {"message": {"token": fcm_token(13), "notification": {"title": "t", "body": "b"}}}
    bad = {"message": {"token": fcm_token(13), "notification": {"title": 5}}}

    assert send(client, fcm, good).status_code == 200
    assert send(client, fcm, bad).status_code == 400


def test_bad_json_is_invalid_argument(client, fcm):
    response = send(client, fcm, b"{not json")

    assert response.status_code == 400
    assert error_of(response)["status"] == "INVALID_ARGUMENT"


def test_unknown_path_is_not_found(client, fcm):
    response = client.get(f"https://localhost:{fcm.ports.tls}/v1/nothing")

    assert response.status_code == 404
    assert error_of(response)["status"] == "NOT_FOUND"


def test_wrong_method_is_405(client, fcm):
    response = client.get(fcm.send_url())

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_h2c_prior_knowledge_on_plain_port(fcm, bearer):
    url = f"http://127.0.0.1:{fcm.ports.plain}/v1/projects/{fcm.project}/messages:send"
    headers = {"Authorization": f"Bearer {bearer}"}

    with httpx.Client(http1=False, http2=True, headers=headers) as session:
        response = session.post(url, json={"message": {"token": fcm_token(14)}})

    assert response.http_version == "HTTP/2"
    assert response.status_code == 200


def test_http1_on_plain_port(fcm, bearer):
    url = f"http://127.0.0.1:{fcm.ports.plain}/v1/projects/{fcm.project}/messages:send"

    response = httpx.post(
        url,
        json={"message": {"token": fcm_token(15)}},
        headers={"Authorization": f"Bearer {bearer}"},
    )

    assert response.http_version == "HTTP/1.1"
    assert response.status_code == 200
