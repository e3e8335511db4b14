"""Bad input never crashes the mock APNs gateway.

Bounded fuzzing over loopback h2c: random frames, broken header blocks and random requests.
After each batch a normal push must still succeed, and the event loop must have seen no
unhandled exception.
"""

from __future__ import annotations

import json
import socket
import struct

import hpack
import pytest
from apns_support import (
    TOPIC,
    GatewayThread,
    RawH2Client,
    RecordingSink,
    device_token,
    make_rules,
    provider_token,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.gateways import pki
from sim.gateways.apns_reasons import REASON_STATUS
from sim.gateways.apns_server import ApnsGateway

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    return pki.ensure_credentials(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def gateway(credentials):
    errors: list[dict] = []
    thread = GatewayThread(lambda: ApnsGateway(make_rules(credentials, sink=RecordingSink())))
    thread.loop.call_soon_threadsafe(
        thread.loop.set_exception_handler, lambda loop, context: errors.append(context)
    )
    thread.errors = errors
    thread.token = provider_token(credentials)
    yield thread
    thread.close()


def _frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    header = struct.pack(">I", len(payload))[1:] + bytes([frame_type, flags])
    return header + struct.pack(">I", stream_id & 0x7FFFFFFF) + payload


def _send_and_drain(port: int, data: bytes) -> None:
    """Send ``data`` on a fresh connection and read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        try:
            sock.sendall(data)
            sock.settimeout(0.05)
            for _ in range(100):
                if not sock.recv(65536):
                    break
        except (TimeoutError, ConnectionError):
            pass


def _assert_healthy(gateway) -> None:
    client = RawH2Client(gateway.port)
    headers = [
        ("authorization", f"bearer {gateway.token}"),
        ("apns-topic", TOPIC),
        ("apns-push-type", "alert"),
    ]
    stream_id = client.request(f"/3/device/{device_token(1)}", headers, b'{"aps":{}}')
    assert client.wait_for(lambda: client.stream_ended(stream_id))
    assert client.response(stream_id)[0][":status"] == "200"
    client.close()
    assert gateway.errors == []


frames = st.builds(
    _frame,
    st.integers(0, 12),
    st.integers(0, 255),
    st.integers(0, 9),
    st.binary(max_size=64),
)


@FUZZ
@given(st.lists(frames, min_size=1, max_size=6))
def test_random_frames(gateway, sequence):
    _send_and_drain(gateway.port, PREFACE + EMPTY_SETTINGS + b"".join(sequence))


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_after_preface(gateway, data):
    _send_and_drain(gateway.port, PREFACE + data)


@FUZZ
@given(st.binary(min_size=1, max_size=120), st.integers(0, 255))
def test_garbage_header_block(gateway, block, flags):
    _send_and_drain(gateway.port, PREFACE + EMPTY_SETTINGS + _frame(1, flags | 0x4, 1, block))


MALFORMED_HEADER_LISTS = [
    [(":method", "POST"), (":scheme", "https")],  # no :path
    [(":path", "/3/device/x"), (":method", "POST"), (":method", "GET"), (":scheme", "https")],
    [(":method", "POST"), (":scheme", "https"), (":path", "/"), ("Upper-Case", "x")],
    [(":method", "POST"), (":scheme", "https"), (":path", "/"), ("connection", "close")],
    [("apns-topic", TOPIC), (":method", "POST"), (":scheme", "https"), (":path", "/")],
    [(":method", "POST"), (":scheme", "https"), (":path", "/"), (":status", "200")],
    [(":method", "POST"), (":scheme", "https"), (":path", ""), (":authority", "x")],
    [(":method", "POST"), (":scheme", "https"), (":path", "/"), ("te", "gzip")],
    [(":method", "POST"), (":scheme", "https"), (":path", "/"), ("bad header", "x")],
]


@pytest.mark.parametrize("headers", MALFORMED_HEADER_LISTS)
def test_malformed_request_headers(gateway, headers):
    block = hpack.Encoder().encode(headers)
    _send_and_drain(gateway.port, PREFACE + EMPTY_SETTINGS + _frame(1, 0x5, 1, block))
    _assert_healthy(gateway)


def test_data_on_idle_and_even_streams(gateway):
    sequence = [
        _frame(0, 0x1, 3, b"{}"),  # DATA on a stream never opened
        _frame(1, 0x4, 2, hpack.Encoder().encode([(":method", "POST")])),  # even stream id
        _frame(8, 0, 1, b"\x00\x00\x00\x00"),  # zero WINDOW_UPDATE
        _frame(6, 0, 1, b"12345678"),  # PING on a stream
    ]
    for frame in sequence:
        _send_and_drain(gateway.port, PREFACE + EMPTY_SETTINGS + frame)
    _assert_healthy(gateway)


header_names = st.sampled_from(
    [
        "apns-topic",
        "apns-id",
        "apns-priority",
        "apns-expiration",
        "apns-collapse-id",
        "apns-push-type",
        "authorization",
        "content-type",
        "x-extra",
    ]
)
header_values = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)


@FUZZ
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    path=st.one_of(
        st.just("/3/device/"),
        st.builds(lambda t: f"/3/device/{t}", st.text("0123456789abcdefXYZ/?", max_size=70)),
        st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).map(
            lambda p: "/" + p
        ),
    ),
    headers=st.lists(st.tuples(header_names, header_values), max_size=8),
    body=st.one_of(st.binary(max_size=300), st.just(b"{not json"), st.just(b"x" * 6000)),
)
def test_random_requests_get_named_reasons(gateway, method, path, headers, body):
    client = RawH2Client(gateway.port)
    headers = [("authorization", f"bearer {gateway.token}")] + [
        (name, value) for name, value in headers if name != "authorization"
    ]
    stream_id = client.request(path, headers, body, method=method)
    assert client.wait_for(lambda: client.stream_ended(stream_id))
    response_headers, response_body = client.response(stream_id)
    client.close()

    status = int(response_headers[":status"])
    if method == "HEAD":
        assert response_body == b""
    elif status != 200:
        reason = json.loads(response_body)["reason"]
        assert REASON_STATUS[reason] == status


def test_gateway_healthy_after_fuzzing(gateway):
    _assert_healthy(gateway)


def test_malformed_frame_gets_protocol_error_goaway(gateway):
    from h2.errors import ErrorCodes
    from hyperframe.frame import GoAwayFrame

    client = RawH2Client(gateway.port)
    client.send_raw(_frame(0, 0x1, 0, b"{}"))  # DATA on stream 0 is a connection error
    assert client.wait_for(lambda: client.closed)

    goaways = [f for f in client.frames if isinstance(f, GoAwayFrame)]
    assert [f.error_code for f in goaways] == [ErrorCodes.PROTOCOL_ERROR]
    _assert_healthy(gateway)
