"""Bad input never crashes the FCM gateway: a bounded fuzz on loopback, then a normal send."""

from __future__ import annotations

import json
import os
import random
import socket
import ssl

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateways.fcm_helpers import FcmEnv, fcm_token

# JSON values of bounded size and depth, for message bodies the rules must survive.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
message_fields = st.dictionaries(
    st.sampled_from(
        ["token", "topic", "condition", "fid", "data", "notification", "android", "apns", "x"]
    ),
    json_values,
    max_size=5,
)


@pytest.fixture(scope="module")
def bearer(fcm_env: FcmEnv) -> str:
    return fcm_env.access_token()


@pytest.fixture(scope="module")
def client(fcm_env: FcmEnv, bearer: str):
    context = ssl.create_default_context(cafile=str(fcm_env.credentials.ca_cert))
    headers = {"Authorization": f"Bearer {bearer}"}
    with httpx.Client(http2=True, verify=context, headers=headers, timeout=10) as session:
        yield session


def assert_still_serves(client: httpx.Client, env: FcmEnv) -> None:
    response = client.post(env.send_url(), json={"message": {"token": fcm_token(400)}})
    assert response.status_code == 200


def assert_google_shaped(response: httpx.Response) -> None:
    body = response.json()
    if response.status_code == 200:
        assert body["name"].startswith("projects/")
    else:
        assert body["error"]["code"] == response.status_code
        assert body["error"]["status"]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(message=message_fields, validate_only=json_values)
def test_fuzzed_messages_get_google_answers(fcm_env, client, message, validate_only):
    body = {"message": message, "validate_only": validate_only}

    response = client.post(fcm_env.send_url(), content=json.dumps(body).encode())

    assert response.status_code in (200, 400)
    assert_google_shaped(response)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=2048))
def test_fuzzed_bytes_get_400(fcm_env, client, body):
    response = client.post(fcm_env.send_url(), content=body)

    assert response.status_code == 400
    assert_google_shaped(response)


@pytest.mark.parametrize(
    "body, status",
    [
        (b"", 400),
        (b"{", 400),
        (b"[]", 400),
        (b'"message"', 400),
        (b"null", 400),
        (b"[" * 100_000 + b"]" * 100_000, 400),
        (b'{"message": {"token": "' + b"a" * 300_000 + b'"}}', 413),
        ('{"message": {"topic": "caf\u00e9"}}'.encode(), 400),
        (b'{"message": {"token": "\xff\xfe"}}', 400),
        (b'{"message": {"topic": "a", "data": {"\\ud800": "x"}}}', 400),
        (b'{"message": {"topic": "a", "data": {"k": "\\udfff"}}}', 400),
    ],
    ids=[
        "empty",
        "truncated",
        "array",
        "string",
        "null",
        "deep-nesting",
        "oversized",
        "bad-topic",
        "bad-utf8",
        "surrogate-key",
        "surrogate-value",
    ],
)
def test_bad_bodies_get_errors(fcm, client, body, status):
    response = client.post(fcm.send_url(), content=body)

    assert response.status_code == status
    assert response.json()["error"]["code"] == status
    assert_still_serves(client, fcm)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_methods_get_405(fcm, client, method):
    assert client.request(method, fcm.send_url()).status_code == 405
    assert client.request(method, f"{fcm.ports.base_url}/token").status_code == 405


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v1/projects/p/messages",
        "/v1/projects//messages:send",
        "/v1/projects/a/b/messages:send",
        "/token/extra",
        "/%00",
        "/v1/projects/p/messages:send/x",
    ],
)
def test_unknown_paths_get_404(fcm, client, path):
    response = client.post(f"{fcm.ports.base_url}{path}", json={})

    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


def test_failing_sink_costs_one_500(fcm, client, monkeypatch):
    def broken_record(request, outcome):
        raise RuntimeError("sink is broken")

    monkeypatch.setattr(fcm.sink, "record", broken_record)
    response = client.post(fcm.send_url(), json={"message": {"token": fcm_token(401)}})
    monkeypatch.undo()

    assert response.status_code == 500
    assert response.json()["error"]["status"] == "INTERNAL"
    assert_still_serves(client, fcm)


def garbage_payloads(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    payloads = [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(64),
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /v1/projects/p/messages:send HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x00\x05hello",
        b"\r\n" * 100,
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
    ]
    payloads += [rng.randbytes(rng.randint(1, 512)) for _ in range(count)]
    return payloads


def send_garbage(port: int, payload: bytes, *, tls_context: ssl.SSLContext | None) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
        try:
            if tls_context is None:
                raw.sendall(payload)
                # End of input lets the server answer or close without waiting for more bytes.
                raw.shutdown(socket.SHUT_WR)
                raw.recv(4096)
                return
            with tls_context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(payload)
                sock.recv(4096)
        except (OSError, TimeoutError):
            pass


def test_garbage_bytes_on_both_ports(fcm, client):
    tls_context = ssl.create_default_context(cafile=str(fcm.credentials.ca_cert))
    tls_context.set_alpn_protocols(["h2", "http/1.1"])

    for payload in garbage_payloads(seed=7, count=15):
        send_garbage(fcm.ports.plain, payload, tls_context=None)
        send_garbage(fcm.ports.tls, payload, tls_context=tls_context)
        # Garbage straight onto the TLS port, where a handshake is expected.
        send_garbage(fcm.ports.tls, payload, tls_context=None)

    assert_still_serves(client, fcm)
