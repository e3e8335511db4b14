"""The lane's HTTP client: what goes on the wire, how responses are read, and what Locust's
statistics receive."""

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
from sim.driver.response import LaneResponse
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


def scripted_server(replies: list[list[bytes]], connections: list[tuple]) -> StreamServer:
    """A server that responds to each request with the next reply, written as separate chunks.

    A reply that ends with ``b""`` closes the connection after its chunks.
    """

    def handle(sock, address):
        connections.append(address)
        while replies:
            if not sock.recv(4096):
                return
            chunks = replies.pop(0)
            for chunk in chunks:
                if chunk:
                    sock.sendall(chunk)
                    # A pause makes each chunk arrive in a read of its own.
                    gevent.sleep(0.01)
            if chunks and chunks[-1] == b"":
                sock.close()
                return

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    return server


def exchange(replies: list[list[bytes]], method: str = "POST") -> tuple[list[dict], int]:
    """Send one request per reply through one client; return the events and connection count."""
    connections: list[tuple] = []
    count = len(replies)
    server = scripted_server(replies, connections)
    hook, fired = recording_event()
    client = make_client(f"http://127.0.0.1:{server.server_port}", hook)
    try:
        for number in range(count):
            client.send(HttpRequest(method, f"/{number}", "call", {} if method == "POST" else None))
    finally:
        client.close()
        server.stop()
    return fired, len(connections)


OK_2 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


def test_chunked_body_in_pieces():
    reply = [
        b"HTTP/1.1 200 OK\r\nTransfer-Enc",
        b"oding: chunked\r\n\r\n5\r\nhello\r\n",
        b"3\r\nabc\r\n0\r\n\r\n",
    ]
    fired, connections = exchange([reply, [OK_2]])
    assert [event["response_length"] for event in fired] == [8, 2]
    assert [event["exception"] for event in fired] == [None, None]
    assert connections == 1


def test_interim_response_before_final():
    reply = [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc",
    ]
    fired, connections = exchange([reply, [OK_2]])
    assert fired[0]["exception"] is None
    assert fired[0]["response_length"] == 3
    assert connections == 1


def test_body_until_close():
    reply = [b"HTTP/1.1 200 OK\r\n\r\nabc", b"defg", b""]
    fired, connections = exchange([reply, [OK_2]])
    assert [event["response_length"] for event in fired] == [7, 2]
    assert [event["exception"] for event in fired] == [None, None]
    assert connections == 2


def test_connection_close_header_reconnects():
    reply = [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"]
    fired, connections = exchange([reply, [OK_2]])
    assert [event["exception"] for event in fired] == [None, None]
    assert connections == 2


def test_head_response_without_body():
    reply = [b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n"]
    fired, connections = exchange(
        [reply, [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]], "HEAD"
    )
    assert [event["response_length"] for event in fired] == [0, 0]
    assert [event["exception"] for event in fired] == [None, None]
    assert connections == 1


def test_response_cut_short_is_failure():
    reply = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", b""]
    fired, connections = exchange([reply, [OK_2]])
    assert fired[0]["exception"] is not None
    assert fired[1]["exception"] is None
    assert connections == 2


@pytest.mark.parametrize(
    ("chunks", "length", "close"),
    [
        ([OK_2], 2, False),
        ([b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"], 2, True),
        ([OK_2 + b"HTTP/1.1 200 OK\r\n"], 2, True),
        ([b"HTTP/1.1 204 No Content\r\n\r\n"], 0, False),
        ([b"HTTP/1.1 200 OK\r\n\r\nab", b"c", b""], 3, True),
    ],
)
def test_parser_length_and_keep_alive(chunks, length, close):
    response = LaneResponse("POST")
    for chunk in chunks:
        response.feed_data(chunk)
    assert response.complete
    assert response.body_length == length
    assert response.should_close() is close
