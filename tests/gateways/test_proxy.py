"""The loopback CONNECT proxy: tunnels to the mocks' ports and nothing else."""

from __future__ import annotations

import asyncio
import socket
import ssl

import httpx
import pytest

from sim.gateways.proxy import ConnectProxy, gateway_routes
from tests.gateways.fcm_helpers import FcmEnv, fcm_token


@pytest.fixture
def upstream_spy(monkeypatch) -> list[tuple[str, int]]:
    """Record every connection the proxy opens, wherever it would go."""
    opened: list[tuple[str, int]] = []
    real_open_connection = asyncio.open_connection

    async def spying_open_connection(host=None, port=None, *args, **kwargs):
        opened.append((host, port))
        return await real_open_connection(host, port, *args, **kwargs)

    monkeypatch.setattr("sim.gateways.proxy.asyncio.open_connection", spying_open_connection)
    return opened


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` to the proxy and return all it answers before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_routes_cover_public_hosts():
    routes = gateway_routes(fcm_tls_port=1001, apns_port=1002)

    assert routes[("fcm.googleapis.com", 443)] == 1001
    assert routes[("oauth2.googleapis.com", 443)] == 1001
    for host in (
        "api.push.apple.com",
        "api.development.push.apple.com",
        "api.sandbox.push.apple.com",
    ):
        assert routes[(host, 443)] == 1002


def test_httpx_reaches_mock_through_proxy(fcm: FcmEnv, upstream_spy):
    context = ssl.create_default_context(cafile=str(fcm.credentials.ca_cert))
    proxy = f"http://127.0.0.1:{fcm.proxy_port}"
    headers = {"Authorization": f"Bearer {fcm.access_token()}"}
    url = f"https://fcm.googleapis.com/v1/projects/{fcm.project}/messages:send"

    with httpx.Client(proxy=proxy, verify=context, http2=True, headers=headers) as client:
        response = client.post(url, json={"message": {"token": fcm_token(300)}})

    assert response.status_code == 200
    assert response.http_version == "HTTP/2"
    assert upstream_spy == [("127.0.0.1", fcm.ports.tls)]


def test_token_host_goes_through_proxy(fcm: FcmEnv, upstream_spy):
    context = ssl.create_default_context(cafile=str(fcm.credentials.ca_cert))
    proxy = f"http://127.0.0.1:{fcm.proxy_port}"

    with httpx.Client(proxy=proxy, verify=context) as client:
        response = client.post("https://oauth2.googleapis.com/token", data={})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert upstream_spy == [("127.0.0.1", fcm.ports.tls)]


@pytest.mark.parametrize(
    "target",
    [
        "example.com:443",
        "fcm.googleapis.com:80",
        "FCM.googleapis.com.evil.test:443",
        "8.8.8.8:443",
        "[2001:db8::1]:443",
        "fcm.googleapis.com",
        "localhost:22",
    ],
)
def test_other_targets_get_403(fcm: FcmEnv, upstream_spy, fail_closed, target):
    answer = raw_request(
        fcm.proxy_port, f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()
    )

    assert status_of(answer) == 403
    assert upstream_spy == []
    assert fail_closed.refused == []


def test_unlisted_loopback_port_never_connected(fcm: FcmEnv, upstream_spy):
    # A listener on loopback that is not in the allow-list must see no connection at all.
    with socket.create_server(("127.0.0.1", 0)) as canary:
        canary.settimeout(0.3)
        port = canary.getsockname()[1]

        answer = raw_request(fcm.proxy_port, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())

        assert status_of(answer) == 403
        with pytest.raises(TimeoutError):
            canary.accept()
    assert upstream_spy == []


def test_host_names_match_case_insensitively(fcm: FcmEnv, upstream_spy):
    with socket.create_connection(("127.0.0.1", fcm.proxy_port), timeout=5) as sock:
        sock.sendall(b"CONNECT FCM.GoogleAPIs.com:443 HTTP/1.1\r\n\r\n")
        answer = sock.recv(4096)

    assert status_of(answer) == 200
    assert upstream_spy == [("127.0.0.1", fcm.ports.tls)]


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET http://fcm.googleapis.com/ HTTP/1.1\r\nHost: fcm.googleapis.com\r\n\r\n", 405),
        (b"CONNECT\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400),
        (b"CONNECT fcm.googleapis.com:443 HTTP/1.1\r\n" + b"X: " + b"a" * 10000 + b"\r\n\r\n", 431),
        (b"CONNECT fcm.googleapis.com:443", 400),
    ],
    ids=["plain-get", "no-target", "tls-bytes", "huge-head", "cut-short"],
)
def test_bad_requests_rejected(fcm: FcmEnv, upstream_spy, request_bytes, status):
    with socket.create_connection(("127.0.0.1", fcm.proxy_port), timeout=15) as sock:
        sock.sendall(request_bytes)
        if not request_bytes.endswith(b"\r\n\r\n"):
            sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(4096)

    assert status_of(answer) == status
    assert upstream_spy == []


def test_mock_not_listening_is_502(fail_closed):
    async def scenario() -> bytes:
        with socket.create_server(("127.0.0.1", 0)) as placeholder:
            closed_port = placeholder.getsockname()[1]
        proxy = ConnectProxy({("fcm.googleapis.com", 443): closed_port})
        port = await proxy.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"CONNECT fcm.googleapis.com:443 HTTP/1.1\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(4096), 5)
            writer.close()
            return answer
        finally:
            await proxy.stop()

    assert status_of(asyncio.run(scenario())) == 502
