"""HTTP/2 framing of the mock APNs gateway, checked frame by frame with a raw h2 client."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import pytest
from apns_support import (
    TOPIC,
    GatewayThread,
    RawH2Client,
    RecordingSink,
    ScriptedFaults,
    device_token,
    make_rules,
    provider_token,
)
from h2.errors import ErrorCodes
from h2.events import PingAckReceived
from h2.settings import SettingCodes
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, RstStreamFrame, SettingsFrame

from sim.gateways import pki
from sim.gateways.apns_server import ApnsGateway, ConnectionScript, GoawayPlan
from sim.gateways.hooks import FaultAction

BODY = b'{"aps":{"alert":"hello"}}'
SLOW = device_token(8001)


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    return pki.ensure_credentials(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def start(credentials):
    """Start a gateway with the given options; stopped after the test."""
    threads = []

    def _start(*, tls=False, script=None, idle_timeout=None, faults=None):
        sink = RecordingSink()
        options = {"faults": faults} if faults else {}
        rules = make_rules(credentials, sink=sink, **options)
        context = pki.server_ssl_context(credentials) if tls else None
        thread = GatewayThread(
            lambda: ApnsGateway(
                rules,
                ssl_context=context,
                script=(lambda number: script) if script else None,
                idle_timeout=idle_timeout,
            )
        )
        thread.sink = sink
        threads.append(thread)
        return thread

    yield _start
    for thread in threads:
        thread.close()


@functools.lru_cache
def _shared_token(credentials) -> str:
    # One token for the whole module: a connection that changes tokens gets 429.
    return provider_token(credentials)


def _headers(credentials, **extra) -> list[tuple[str, str]]:
    headers = [
        ("authorization", f"bearer {_shared_token(credentials)}"),
        ("apns-topic", TOPIC),
        ("apns-push-type", "alert"),
    ]
    return headers + list(extra.items())


def _push(client, credentials, number=1, body=BODY, **kwargs) -> int:
    return client.request(
        f"/3/device/{device_token(number)}", _headers(credentials), body, **kwargs
    )


def _settings_values(client) -> list[int]:
    return [
        frame.settings[SettingCodes.MAX_CONCURRENT_STREAMS]
        for frame in client.frames
        if isinstance(frame, SettingsFrame)
        and SettingCodes.MAX_CONCURRENT_STREAMS in frame.settings
    ]


def test_accepted_push_is_one_headers_frame(start, credentials):
    gateway = start()
    client = RawH2Client(gateway.port)
    stream_id = _push(client, credentials)
    assert client.wait_for(lambda: client.stream_ended(stream_id))

    frames = client.frames_on(stream_id)
    assert [type(f) for f in frames] == [HeadersFrame]
    assert "END_STREAM" in frames[0].flags
    headers, _ = client.response(stream_id)
    assert headers[":status"] == "200"
    assert headers["apns-id"]
    client.close()


def test_error_is_one_data_frame(start, credentials):
    gateway = start()
    client = RawH2Client(gateway.port)
    stream_id = client.request("/3/device/short", _headers(credentials), BODY)
    assert client.wait_for(lambda: client.stream_ended(stream_id))

    frames = client.frames_on(stream_id)
    assert [type(f) for f in frames] == [HeadersFrame, DataFrame]
    assert "END_STREAM" not in frames[0].flags
    assert "END_STREAM" in frames[1].flags
    assert json.loads(frames[1].data) == {"reason": "BadDeviceToken"}
    client.close()


def test_host_header_replaces_authority(start, credentials):
    gateway = start()
    client = RawH2Client(gateway.port)
    headers = [("host", "api.development.push.apple.com")] + _headers(credentials)
    stream_id = client.request(f"/3/device/{device_token(2)}", headers, BODY, authority=None)
    assert client.wait_for(lambda: client.stream_ended(stream_id))

    assert client.response(stream_id)[0][":status"] == "200"
    client.close()


def test_ping_gets_ack(start):
    gateway = start()
    client = RawH2Client(gateway.port)
    client.h2.ping(b"pushsim!")
    client.flush()

    assert client.wait_for(lambda: any(isinstance(e, PingAckReceived) for e in client.events))
    client.close()


def test_large_body_is_drained_and_rejected(start, credentials):
    gateway = start()
    client = RawH2Client(gateway.port)
    stream_id = _push(client, credentials, body=b"x" * 300_000)
    assert client.wait_for(lambda: client.stream_ended(stream_id))

    headers, body = client.response(stream_id)
    assert headers[":status"] == "413"
    assert json.loads(body) == {"reason": "PayloadTooLarge"}
    follow_up = _push(client, credentials, number=3)
    assert client.wait_for(lambda: client.stream_ended(follow_up))
    assert client.response(follow_up)[0][":status"] == "200"
    client.close()


def test_client_reset_is_not_recorded(start, credentials):
    gateway = start()
    client = RawH2Client(gateway.port)
    reset_id = client.h2.get_next_available_stream_id()
    path = f"/3/device/{device_token(4)}"
    client.h2.send_headers(
        reset_id,
        [(":method", "POST"), (":scheme", "https"), (":path", path), (":authority", "x")]
        + _headers(credentials),
    )
    client.h2.reset_stream(reset_id, ErrorCodes.CANCEL)
    client.flush()
    stream_id = _push(client, credentials, number=5)
    assert client.wait_for(lambda: client.stream_ended(stream_id))

    assert client.response(stream_id)[0][":status"] == "200"
    assert [r.token for r, _ in gateway.sink.records] == [device_token(5)]
    client.close()


def test_one_stream_until_valid_token(start, credentials):
    gateway = start()
    client = RawH2Client(gateway.port)
    client.wait_for(lambda: bool(_settings_values(client)))
    assert _settings_values(client) == [1]

    stream_id = _push(client, credentials)
    assert client.wait_for(lambda: client.stream_ended(stream_id))
    assert client.wait_for(lambda: len(_settings_values(client)) == 2)
    assert _settings_values(client) == [1, 1000]
    client.close()


def test_stream_over_limit_is_refused(start, credentials):
    gateway = start()
    client = RawH2Client(gateway.port)
    client.wait_for(lambda: bool(_settings_values(client)))
    client.flush()  # our SETTINGS ACK reaches the server before the streams
    first = client.h2.get_next_available_stream_id()
    client.h2.send_headers(
        first,
        [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", f"/3/device/{device_token(6)}"),
            (":authority", "x"),
        ]
        + _headers(credentials),
    )
    client.flush()
    # Behave as a client that ignores the advertised limit.
    client.h2.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS] = 100
    client.h2.remote_settings.acknowledge()
    second = client.request(f"/3/device/{device_token(7)}", _headers(credentials), BODY)
    assert client.wait_for(lambda: client.stream_ended(second))

    resets = [f for f in client.frames_on(second) if isinstance(f, RstStreamFrame)]
    assert [f.error_code for f in resets] == [ErrorCodes.REFUSED_STREAM]
    client.send_body(first, BODY)
    assert client.wait_for(lambda: client.stream_ended(first))
    assert client.response(first)[0][":status"] == "200"
    client.close()


def test_goaway_mid_flight_keeps_streams(start, credentials):
    plan = GoawayPlan(after_requests=2, ignored_requests=2, reason="Shutdown")
    gateway = start(script=ConnectionScript(goaway=plan))
    client = RawH2Client(gateway.port)
    streams = [_push(client, credentials, number=10 + i) for i in range(4)]
    assert client.wait_for(lambda: client.closed, timeout=5)

    goaways = [f for f in client.frames if isinstance(f, GoAwayFrame)]
    assert len(goaways) == 1
    assert goaways[0].last_stream_id == streams[1]
    assert json.loads(goaways[0].additional_data) == {"reason": "Shutdown"}
    assert [client.response(s)[0].get(":status") for s in streams] == ["200", "200", None, None]
    assert sorted(r.token for r, _ in gateway.sink.accepted()) == sorted(
        device_token(10 + i) for i in range(2)
    )
    # The GOAWAY follows the responses on the wire.
    assert isinstance(client.frames[-1], GoAwayFrame)


def test_idle_connection_gets_goaway(start):
    gateway = start(idle_timeout=0.3)
    client = RawH2Client(gateway.port)
    assert client.wait_for(lambda: client.closed, timeout=3)

    goaways = [f for f in client.frames if isinstance(f, GoAwayFrame)]
    assert json.loads(goaways[0].additional_data) == {"reason": "IdleTimeout"}


def test_stream_limit_drops_after_rejection(start, credentials):
    gateway = start(script=ConnectionScript(streams_after_rejection=3))
    client = RawH2Client(gateway.port)
    ok = _push(client, credentials)
    assert client.wait_for(lambda: client.stream_ended(ok))
    bad = client.request("/3/device/short", _headers(credentials), BODY)
    assert client.wait_for(lambda: client.stream_ended(bad))

    assert client.wait_for(lambda: _settings_values(client)[-1:] == [3])
    assert _settings_values(client) == [1, 1000, 3]
    client.close()


def test_scripted_reset_and_stall(start, credentials):
    script = ConnectionScript(resets={1: ErrorCodes.CANCEL}, stalls={2: 0.4})
    gateway = start(script=script)
    client = RawH2Client(gateway.port)
    reset = _push(client, credentials, number=20)
    assert client.wait_for(lambda: client.stream_ended(reset))
    began = time.monotonic()
    stalled = _push(client, credentials, number=21)
    assert client.wait_for(lambda: client.stream_ended(stalled))

    assert [type(f) for f in client.frames_on(reset)] == [RstStreamFrame]
    assert time.monotonic() - began >= 0.35
    assert client.response(stalled)[0][":status"] == "200"
    assert [r.token for r, _ in gateway.sink.records] == [device_token(21)]
    client.close()


def test_fault_delay_does_not_block_other_streams(start, credentials):
    gateway = start(faults=ScriptedFaults({SLOW: FaultAction(delay=0.5)}))
    client = RawH2Client(gateway.port)
    slow = client.request(f"/3/device/{SLOW}", _headers(credentials), BODY)
    fast = _push(client, credentials, number=30)
    assert client.wait_for(lambda: client.stream_ended(fast))

    assert not client.stream_ended(slow)
    assert client.wait_for(lambda: client.stream_ended(slow))
    outcome = [o for r, o in gateway.sink.records if r.token == SLOW][0]
    assert outcome.added_latency == 0.5
    client.close()


def test_small_client_window_still_one_data_frame(start, credentials):
    gateway = start()
    client = RawH2Client(gateway.port, settings={SettingCodes.INITIAL_WINDOW_SIZE: 5})
    stream_id = client.request("/3/device/short", _headers(credentials), BODY)
    assert client.wait_for(lambda: bool(client.frames_on(stream_id)))
    time.sleep(0.1)
    client.read_once(timeout=0.2)
    assert not any(isinstance(f, DataFrame) for f in client.frames_on(stream_id))
    assert gateway.sink.records == []

    client.h2.increment_flow_control_window(100, stream_id)
    client.flush()
    assert client.wait_for(lambda: client.stream_ended(stream_id))
    data = [f for f in client.frames_on(stream_id) if isinstance(f, DataFrame)]
    assert len(data) == 1
    assert json.loads(data[0].data) == {"reason": "BadDeviceToken"}
    assert [o.reason for _, o in gateway.sink.records] == ["BadDeviceToken"]
    client.close()


@pytest.mark.parametrize("alpn", [["h2"], None])
def test_tls_with_and_without_alpn(alpn, start, credentials):
    gateway = start(tls=True)
    context = pki.client_ssl_context(credentials, alpn=alpn)
    client = RawH2Client(gateway.port, ssl_context=context)
    stream_id = _push(client, credentials)
    assert client.wait_for(lambda: client.stream_ended(stream_id))

    assert client.sock.selected_alpn_protocol() == (alpn[0] if alpn else None)
    assert client.response(stream_id)[0][":status"] == "200"
    client.close()


def test_stop_sends_goaway_shutdown(start, credentials):
    gateway = start()
    client = RawH2Client(gateway.port)
    stream_id = _push(client, credentials)
    assert client.wait_for(lambda: client.stream_ended(stream_id))
    gateway.run(gateway.gateway.stop(grace=1.0))

    assert client.wait_for(lambda: client.closed, timeout=3)
    goaways = [f for f in client.frames if isinstance(f, GoAwayFrame)]
    assert json.loads(goaways[0].additional_data) == {"reason": "Shutdown"}


class _BrokenFaults:
    def action(self, request):
        raise RuntimeError("fault timeline lost its schedule")


def test_failing_policy_responds_500(start, credentials):
    gateway = start(faults=_BrokenFaults())
    client = RawH2Client(gateway.port)
    first = _push(client, credentials, number=40)
    assert client.wait_for(lambda: client.stream_ended(first))
    second = _push(client, credentials, number=41)
    assert client.wait_for(lambda: client.stream_ended(second))

    for stream_id in (first, second):
        headers, body = client.response(stream_id)
        assert headers[":status"] == "500"
        assert json.loads(body) == {"reason": "InternalServerError"}
    client.close()


def test_goaway_after_provider_token_error(start, credentials):
    script = ConnectionScript(goaway_on_reasons=frozenset({"ExpiredProviderToken"}))
    gateway = start(script=script)
    client = RawH2Client(gateway.port)
    stale = provider_token(credentials, iat=time.time() - 7200)
    headers = [("authorization", f"bearer {stale}"), ("apns-topic", TOPIC)]
    stream_id = client.request(f"/3/device/{device_token(50)}", headers, BODY)
    assert client.wait_for(lambda: client.closed)

    headers, body = client.response(stream_id)
    assert headers[":status"] == "403"
    assert json.loads(body) == {"reason": "ExpiredProviderToken"}
    goaways = [f for f in client.frames if isinstance(f, GoAwayFrame)]
    assert goaways[0].last_stream_id == stream_id
    assert json.loads(goaways[0].additional_data) == {"reason": "ExpiredProviderToken"}


def test_fault_with_unknown_reason_responds_500(start, credentials):
    faults = ScriptedFaults({SLOW: FaultAction(status=503, reason="Overloaded")})
    gateway = start(faults=faults)
    client = RawH2Client(gateway.port)
    stream_id = client.request(f"/3/device/{SLOW}", _headers(credentials), BODY)
    assert client.wait_for(lambda: client.stream_ended(stream_id))

    headers, body = client.response(stream_id)
    assert headers[":status"] == "500"
    assert json.loads(body) == {"reason": "InternalServerError"}
    client.close()


def test_module_runs_as_a_command(credentials, tmp_path):
    import re
    import signal
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "sim.gateways.apns_server",
        "--h2c",
        "--credentials",
        str(credentials.directory),
    ]
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=root)
    try:
        line = process.stderr.readline()
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1))
        client = RawH2Client(port)
        stream_id = _push(client, credentials, number=60)
        assert client.wait_for(lambda: client.stream_ended(stream_id))
        assert client.response(stream_id)[0][":status"] == "200"
        client.close()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
