"""The lane's HTTP client: what goes on the wire, and what Locust's statistics receive."""

from __future__ import annotations

import json
import socket
import struct
import subprocess

import gevent
import gevent.ssl
import pytest
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer

from sim.driver.http import NO_RESPONSE, LaneClient
from sim.driver.wire import HttpRequest


@pytest.fixture
def backend():
    """A gevent WSGI server that records each request and responds with the status in its path."""
    seen: list[dict] = []

    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        seen.append(
            {
                "method": environ["REQUEST_METHOD"],
                "path": environ["PATH_INFO"],
                "content_type": environ.get("CONTENT_TYPE"),
                "authorization": environ.get("HTTP_AUTHORIZATION"),
                "body": body,
                "client_port": environ["REMOTE_PORT"],
            }
        )
        status = environ["PATH_INFO"].rsplit("/", 1)[-1]
        code = int(status) if status.isdigit() else 200
        headers = [("Content-Type", "application/json")]
        if status == "close":
            headers.append(("Connection", "close"))
        start_response(f"{code} X", headers)
        return [b"{}"]

    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.stop()


class RecordingEvent:
    """A stand-in for Locust's ``events.request``, because importing Locust patches pytest."""

    def __init__(self) -> None:
        self.fired: list[dict] = []

    def fire(self, **kwargs) -> None:
        self.fired.append(kwargs)


def recording_event() -> tuple[RecordingEvent, list[dict]]:
    hook = RecordingEvent()
    return hook, hook.fired


def make_client(url: str, hook: RecordingEvent) -> LaneClient:
    return LaneClient(url, hook, connection_timeout=2.0, network_timeout=2.0)


def test_json_request_and_statistics(backend):
    url, seen = backend
    hook, fired = recording_event()
    client = make_client(url, hook)
    request = HttpRequest(
        "POST", "/api/v1/events", "event:viewed", {"name": "é"}, {"Authorization": "Basic x"}
    )

    status = client.send(request)

    assert status == 200
    assert seen[0]["method"] == "POST"
    assert seen[0]["path"] == "/api/v1/events"
    assert seen[0]["content_type"] == "application/json"
    assert seen[0]["authorization"] == "Basic x"
    assert json.loads(seen[0]["body"]) == {"name": "é"}
    assert fired[0]["name"] == "event:viewed"
    assert fired[0]["request_type"] == "POST"
    assert fired[0]["exception"] is None
    assert fired[0]["response_length"] == 2


def test_connection_is_kept_alive(backend):
    url, seen = backend
    hook, fired = recording_event()
    client = make_client(url, hook)
    for _ in range(3):
        assert client.send(HttpRequest("DELETE", "/a/b", "device:delete")) == 200
    assert [entry["body"] for entry in seen] == [b"", b"", b""]
    assert len({entry["client_port"] for entry in seen}) == 1
    assert [event["exception"] for event in fired] == [None, None, None]


def test_closed_connection_is_reopened(backend):
    url, seen = backend
    hook, fired = recording_event()
    client = make_client(url, hook)
    assert client.send(HttpRequest("GET", "/close", "close")) == 200
    assert client.send(HttpRequest("GET", "/after", "after")) == 200
    assert seen[0]["client_port"] != seen[1]["client_port"]
    assert [event["exception"] for event in fired] == [None, None]


def test_error_status_is_a_failure(backend):
    url, _ = backend
    hook, fired = recording_event()
    status = make_client(url, hook).send(HttpRequest("PUT", "/x/503", "identify", {}))
    assert status == 503
    assert fired[0]["exception"] is not None
    assert "503" in repr(fired[0]["exception"])


def test_base_url_path_prefixes_requests(backend):
    url, seen = backend
    hook, _ = recording_event()
    make_client(url + "/tenant/", hook).send(HttpRequest("GET", "/ping", "ping"))
    assert seen[0]["path"] == "/tenant/ping"


def test_refused_connection_is_a_failure():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hook, fired = recording_event()
    status = make_client(f"http://127.0.0.1:{port}", hook).send(HttpRequest("GET", "/", "root"))
    assert status == NO_RESPONSE
    assert fired[0]["exception"] is not None
    assert fired[0]["name"] == "root"


def test_invalid_backend_url():
    hook, _ = recording_event()
    with pytest.raises(ValueError, match="invalid backend URL"):
        make_client("127.0.0.1:8080", hook)


def test_requests_from_many_greenlets(backend):
    url, seen = backend
    hook, fired = recording_event()
    clients = [make_client(url, hook) for _ in range(8)]
    jobs = [
        gevent.spawn(client.send, HttpRequest("POST", f"/events/n{i}", "event", {"i": i}))
        for i, client in enumerate(clients)
    ]
    gevent.joinall(jobs, timeout=5)
    assert sorted(job.value for job in jobs) == [200] * 8
    assert len(fired) == 8


def test_idle_close_by_server_reconnects():
    connections = []

    def handle(sock, address):
        # Respond once as if the connection stayed open, then close it while idle.
        connections.append(address)
        sock.recv(4096)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        hook, fired = recording_event()
        client = make_client(f"http://127.0.0.1:{server.server_port}", hook)
        assert client.send(HttpRequest("POST", "/one", "one", {})) == 200
        gevent.sleep(0.05)
        assert client.send(HttpRequest("POST", "/two", "two", {})) == 200
    finally:
        server.stop()
    assert len(connections) == 2
    assert [event["exception"] for event in fired] == [None, None]


def test_https_backend(tmp_path):
    key, certificate = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(certificate), "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip

    def handle(sock, address):
        # Two requests on one TLS connection, so the second reuses it.
        for _ in range(2):
            sock.recv(4096)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certificate), str(key))
    server = StreamServer(("127.0.0.1", 0), handle, ssl_context=context)
    server.start()
    try:
        hook, fired = recording_event()
        client = make_client(f"https://127.0.0.1:{server.server_port}", hook)
        assert client.send(HttpRequest("POST", "/one", "one", {})) == 200
        assert client.send(HttpRequest("POST", "/two", "two", {})) == 200
    finally:
        server.stop()
    assert [event["exception"] for event in fired] == [None, None]


def silent_server(behaviour: str):
    """A server that reads one request, then stalls, closes, or resets the connection."""

    def handle(sock, address):
        sock.recv(4096)
        if behaviour == "stall":
            gevent.sleep(2.0)
        elif behaviour == "reset":
            # SO_LINGER with a zero timeout makes close send RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    return server


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("stall", "TimeoutError('timed out')"),
        ("close", "HTTPConnectionClosed('connection closed.')"),
        ("reset", "HTTPConnectionClosed('connection closed.')"),
    ],
)
def test_no_response_is_a_failure(behaviour, expected):
    server = silent_server(behaviour)
    try:
        hook, fired = recording_event()
        client = LaneClient(
            f"http://127.0.0.1:{server.server_port}", hook, connection_timeout=2.0,
            network_timeout=0.2,
        )  # fmt: skip
        status = client.send(HttpRequest("POST", "/one", "one", {}))
    finally:
        server.stop()
    assert status == NO_RESPONSE
    assert repr(fired[0]["exception"]) == expected
    assert fired[0]["response_length"] == 0
