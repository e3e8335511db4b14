"""Connection faults and gauges of the wire servers, driven by the fault timeline of one service.

Each test starts a GatewayService on loopback, posts a run whose clock runs 3600 times faster
than the wall clock (one simulated hour is one wall second), and posts faults anchored at the
current moment over the control API, as the orchestrator does.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time

import httpx
import jwt
import pytest
import requests
from google.auth.transport.requests import Request
from google.oauth2 import service_account
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame, HeadersFrame, SettingsFrame

from sim.formats.tokens import derive_run_key, issue_token
from sim.gateways.runner import BackgroundLoop
from sim.gateways.service import GatewayOptions, GatewayService
from tests.gateways.apns_support import RawH2Client
from tests.gateways.worldkit import wait_for

SEED = 99
TIME_SCALE = 3600.0  # one simulated hour per wall second
PAYLOAD = json.dumps({"aps": {"alert": "Your cart is waiting"}}).encode()


@pytest.fixture
def gateways(tmp_path):
    loop = BackgroundLoop().start()
    service = GatewayService(GatewayOptions(directory=tmp_path / "gateways"))
    config = loop.run(service.start())
    with httpx.Client(
        base_url=config.control_url,
        headers={"Authorization": f"Bearer {config.control_token}"},
        timeout=10,
    ) as control:
        epoch = {"wall_t0": time.time(), "sim_t0": 1_800_000_000.0, "time_scale": TIME_SCALE}
        response = control.post(
            "/control/run", json={"epoch": epoch, "seed": SEED, "shard_count": 1}
        )
        assert response.status_code == 200, response.text
        yield service, config, control
    loop.run(service.stop())
    loop.close()


def post_faults(control: httpx.Client, faults: list[dict]) -> float:
    """Replace the timeline with ``faults`` starting now; return the wall time of the post."""
    posted_at = time.time()
    response = control.post(
        "/control/faults", json={"faults": faults, "replace": True, "anchor": "now"}
    )
    assert response.status_code == 200, response.text
    return posted_at


def metrics(control: httpx.Client) -> dict[tuple[str, frozenset], float]:
    """Scrape /metrics into ``{(name, labels): value}``."""
    samples = {}
    for line in control.get("/metrics").text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        assert match is not None, line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        samples[(match[1], labels)] = float(match[3])
    return samples


def sample(control: httpx.Client, name: str, **labels: str) -> float | None:
    return metrics(control).get((name, frozenset(labels.items())))


def apns_headers(config) -> list[tuple[str, str]]:
    key = open(config.apns.key_path).read()
    claims = {"iss": config.apns.team_id, "iat": int(time.time())}
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": config.apns.key_id})
    return [
        ("authorization", f"bearer {token}"),
        ("apns-topic", config.apns.topic),
        ("apns-push-type", "alert"),
    ]


# The run's tokens are store builds' tokens, which APNs accepts only on its production host.
APNS_HOST = "api.push.apple.com"


def apns_path(group_id: int) -> str:
    return f"/3/device/{issue_token(derive_run_key(SEED), 'ios', group_id, 1)}"


def fcm_access_token(config) -> str:
    credentials = service_account.Credentials.from_service_account_file(
        config.fcm.service_account,
        scopes=["https://www.googleapis.com/auth/firebase.messaging"],
    )
    # Closing the session closes its connection, which the FCM connection gauge counts.
    with requests.Session() as session:
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override session.verify
        session.verify = config.ca_cert
        credentials.refresh(Request(session))
    return credentials.token


def fcm_send(client: RawH2Client, config, message: dict, access_token: str = "") -> int:
    headers = [("content-type", "application/json")]
    if access_token:
        headers.append(("authorization", f"Bearer {access_token}"))
    path = f"/v1/projects/{config.fcm.project_id}/messages:send"
    body = json.dumps({"message": message}).encode()
    return client.request(path, headers, body, authority="fcm.googleapis.com")


def goaways(client: RawH2Client) -> list[GoAwayFrame]:
    return [frame for frame in client.frames if isinstance(frame, GoAwayFrame)]


def advertised_limits(client: RawH2Client) -> list[int]:
    """SETTINGS_MAX_CONCURRENT_STREAMS values the server sent, in order."""
    return [
        frame.settings[SettingCodes.MAX_CONCURRENT_STREAMS]
        for frame in client.frames
        if isinstance(frame, SettingsFrame)
        and "ACK" not in frame.flags
        and SettingCodes.MAX_CONCURRENT_STREAMS in frame.settings
    ]


def ledger_rows(tmp_path, where: str, params: tuple = ()) -> list[sqlite3.Row]:
    path = tmp_path / "gateways" / "deliveries.sqlite"
    with sqlite3.connect(path) as connection:
        connection.row_factory = sqlite3.Row
        return connection.execute(f"SELECT * FROM deliveries WHERE {where}", params).fetchall()


def test_goaway_storm_reaches_apns_clients(gateways):
    service, config, control = gateways
    post_faults(control, [{"kind": "goaway", "service": "apns", "rate": 1.0, "duration": "30h"}])

    for attempt in range(2):
        client = RawH2Client(config.apns.h2c_port)
        try:
            stream_id = client.request(
                apns_path(attempt), apns_headers(config), PAYLOAD, authority=APNS_HOST
            )
            # At 1 GOAWAY per second, a wait over 10 s has a chance of about 5e-5.
            assert client.wait_for(lambda c=client: goaways(c), timeout=10)
            client.wait_for(lambda c=client: c.closed, timeout=2)
        finally:
            client.close()

        (goaway,) = goaways(client)
        assert json.loads(goaway.additional_data) == {"reason": "Shutdown"}
        assert goaway.last_stream_id >= stream_id
        # The push's response went out before the GOAWAY.
        response_index = next(
            index
            for index, frame in enumerate(client.frames)
            if isinstance(frame, HeadersFrame) and frame.stream_id == stream_id
        )
        assert response_index < client.frames.index(goaway)
        assert client.response(stream_id)[0][":status"] == "200"

    applied = sample(control, "pushsim_gateway_faults_applied_total", service="apns", kind="goaway")
    assert applied is not None
    assert applied >= 2
    assert sample(control, "pushsim_gateway_goaway_rate", service="apns") == 1.0
    assert sample(control, "pushsim_gateway_goaway_rate", service="fcm") == 0.0


def test_goaway_storm_reaches_fcm_clients(gateways):
    service, config, control = gateways
    post_faults(control, [{"kind": "goaway", "service": "fcm", "rate": 1.0, "duration": "30h"}])

    client = RawH2Client(config.fcm.plain_port)
    try:
        # No access token: the 401 still answers the stream before any GOAWAY.
        stream_id = fcm_send(client, config, {"token": "x", "data": {"a": "b"}})
        assert client.wait_for(lambda: client.stream_ended(stream_id), timeout=5)
        assert client.wait_for(lambda: goaways(client), timeout=10)
        client.wait_for(lambda: client.closed, timeout=2)
    finally:
        client.close()

    (goaway,) = goaways(client)
    assert goaway.last_stream_id == stream_id
    assert client.response(stream_id)[0][":status"] == "401"
    applied = sample(control, "pushsim_gateway_faults_applied_total", service="fcm", kind="goaway")
    assert applied == 1


def test_stream_limit_lowers_advertised_limit(gateways):
    service, config, control = gateways
    before = RawH2Client(config.apns.h2c_port)
    after = None
    try:
        stream_id = before.request(apns_path(1), apns_headers(config), PAYLOAD, authority=APNS_HOST)
        assert before.wait_for(lambda: before.stream_ended(stream_id))
        assert advertised_limits(before) == [1, 1000]

        post_faults(
            control, [{"kind": "stream_limit", "service": "apns", "limit": 3, "duration": "3h"}]
        )
        assert before.wait_for(lambda: advertised_limits(before)[-1] == 3, timeout=2)
        assert sample(control, "pushsim_gateway_max_streams", service="apns") == 3

        # A connection opened during the fault authenticates to the fault's limit, not 1000.
        after = RawH2Client(config.apns.h2c_port)
        stream_id = after.request(apns_path(2), apns_headers(config), PAYLOAD, authority=APNS_HOST)
        assert after.wait_for(lambda: after.stream_ended(stream_id))
        assert after.wait_for(lambda: len(advertised_limits(after)) >= 2)
        assert advertised_limits(after) == [1, 3]

        # The window ends about 3 wall seconds after the post, and the script's limit returns.
        assert before.wait_for(lambda: advertised_limits(before)[-1] == 1000, timeout=6)
        assert after.wait_for(lambda: advertised_limits(after)[-1] == 1000, timeout=2)
        assert sample(control, "pushsim_gateway_max_streams", service="apns") is None
    finally:
        before.close()
        if after is not None:
            after.close()


def test_gauges_follow_connections_and_streams(gateways):
    service, config, control = gateways

    def gauge(name: str, service_name: str) -> float:
        return sample(control, name, service=service_name) or 0.0

    clients = [RawH2Client(config.apns.h2c_port) for _ in range(2)]
    clients.append(RawH2Client(config.fcm.plain_port))
    try:
        wait_for(lambda: gauge("pushsim_gateway_connections", "apns") == 2, timeout=5)
        wait_for(lambda: gauge("pushsim_gateway_connections", "fcm") == 1, timeout=5)

        post_faults(
            control,
            [{"kind": "latency", "service": "both", "duration": "30h",
              "latency": {"median": "1.5s", "sigma": 0.01}}],
        )  # fmt: skip
        apns_stream = clients[0].request(
            apns_path(3), apns_headers(config), PAYLOAD, authority=APNS_HOST
        )
        fcm_stream = fcm_send(
            clients[2], config, {"token": "x", "data": {}}, fcm_access_token(config)
        )
        wait_for(lambda: gauge("pushsim_gateway_streams_in_flight", "apns") == 1, timeout=1)
        wait_for(lambda: gauge("pushsim_gateway_streams_in_flight", "fcm") == 1, timeout=1)

        assert clients[0].wait_for(lambda: clients[0].stream_ended(apns_stream), timeout=5)
        assert clients[2].wait_for(lambda: clients[2].stream_ended(fcm_stream), timeout=5)
        wait_for(lambda: gauge("pushsim_gateway_streams_in_flight", "apns") == 0, timeout=2)
        wait_for(lambda: gauge("pushsim_gateway_streams_in_flight", "fcm") == 0, timeout=2)
    finally:
        for client in clients:
            client.close()

    wait_for(lambda: gauge("pushsim_gateway_connections", "apns") == 0, timeout=5)
    wait_for(lambda: gauge("pushsim_gateway_connections", "fcm") == 0, timeout=5)


def test_brownout_retry_after_matches_window(gateways, tmp_path):
    service, config, control = gateways
    posted_at = post_faults(control, [{"kind": "brownout", "service": "both", "duration": "10h"}])
    window_end = posted_at + 10.0  # ten simulated hours at 3600x

    apns = RawH2Client(config.apns.h2c_port)
    fcm = RawH2Client(config.fcm.plain_port)
    try:
        sent_at = time.time()
        apns_stream = apns.request(apns_path(4), apns_headers(config), PAYLOAD, authority=APNS_HOST)
        assert apns.wait_for(lambda: apns.stream_ended(apns_stream))
        message = {
            "token": issue_token(derive_run_key(SEED), "android", 4, 1),
            "notification": {"title": "Your cart"},
            "android": {"collapse_key": "cart", "priority": "high", "ttl": "600s"},
        }
        fcm_stream = fcm_send(fcm, config, message, fcm_access_token(config))
        assert fcm.wait_for(lambda: fcm.stream_ended(fcm_stream))
    finally:
        apns.close()
        fcm.close()

    expected = math.ceil(window_end - sent_at)
    headers, body = apns.response(apns_stream)
    assert headers[":status"] == "503"
    assert json.loads(body) == {"reason": "ServiceUnavailable"}
    assert abs(int(headers["retry-after"]) - expected) <= 1

    headers, body = fcm.response(fcm_stream)
    assert headers[":status"] == "503"
    assert json.loads(body)["error"]["status"] == "UNAVAILABLE"
    assert abs(int(headers["retry-after"]) - expected) <= 1

    wait_for(lambda: len(ledger_rows(tmp_path, "status = 503")) == 2, timeout=5)
    rows = {row["service"]: row for row in ledger_rows(tmp_path, "status = 503")}
    for row in rows.values():
        assert row["fault"] == "brownout"
        assert abs(row["retry_after"] - expected) <= 1
    fcm_row = rows["fcm"]
    assert fcm_row["collapse_id"] == "cart"
    assert fcm_row["priority"] == "HIGH"
    assert fcm_row["expiration"] == "600s"
    assert fcm_row["push_type"] == "notification"


def test_latency_delays_one_push_only(gateways, tmp_path):
    service, config, control = gateways
    posted_at = post_faults(
        control,
        [{"kind": "latency", "service": "apns", "duration": "1h",
          "latency": {"median": "2.5s", "sigma": 0.01}}],
    )  # fmt: skip

    # One provider token for both pushes: a new one per push is TooManyProviderTokenUpdates.
    headers = apns_headers(config)
    client = RawH2Client(config.apns.h2c_port)
    try:
        slow_sent = time.time()
        slow = client.request(apns_path(5), headers, PAYLOAD, authority=APNS_HOST)
        # The one-second window is over before the second push, on the same connection.
        time.sleep(max(0.0, posted_at + 1.2 - time.time()))
        fast_sent = time.time()
        fast = client.request(apns_path(6), headers, PAYLOAD, authority=APNS_HOST)
        assert client.wait_for(lambda: client.stream_ended(fast), timeout=2)
        fast_answered = time.time()
        assert not client.stream_ended(slow)
        assert client.wait_for(lambda: client.stream_ended(slow), timeout=5)
        slow_answered = time.time()
    finally:
        client.close()

    assert fast_answered - fast_sent < 1.0
    assert slow_answered - slow_sent >= 2.0
    assert client.response(slow)[0][":status"] == "200"
    assert client.response(fast)[0][":status"] == "200"

    wait_for(lambda: len(ledger_rows(tmp_path, "service = 'apns'")) == 2, timeout=5)
    rows = ledger_rows(tmp_path, "service = 'apns' ORDER BY seq")
    slow_row, fast_row = sorted(rows, key=lambda row: row["added_latency"], reverse=True)
    assert slow_row["fault"] == "latency"
    assert slow_row["added_latency"] >= 2.0
    assert fast_row["fault"] is None
    assert fast_row["added_latency"] == 0.0
