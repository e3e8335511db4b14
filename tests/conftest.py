"""Fixtures shared by every test suite."""

import socket

import pytest

from sim.gateways.pki import LOCAL_ADDRESSES, LOCAL_HOSTS, PUBLIC_HOSTS

_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture(autouse=True)
def fail_closed_resolution(monkeypatch):
    """Resolve the mock gateways' public names to loopback and fail on any other name.

    Clients often swallow resolver errors and retry, so each attempt is also remembered and
    the test fails at teardown even when the client hid the error.
    """
    attempts: list[str] = []

    def guarded_getaddrinfo(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or name in LOCAL_HOSTS or name in LOCAL_ADDRESSES:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        if name.lower().rstrip(".") in PUBLIC_HOSTS:
            return _real_getaddrinfo("127.0.0.1", port, *args, **kwargs)
        attempts.append(name)
        raise OSError(f"test tried to resolve {name!r}: only loopback and mock hosts are allowed")

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts
    assert not attempts, f"a client tried to resolve public hosts: {attempts}"
