"""Fixtures shared by every test suite: name resolution that fails closed."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass
class ResolverGuard:
    """Lets only loopback names resolve; ``allow`` maps a mock host name to 127.0.0.1."""

    mapped: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)

    def allow(self, *hosts: str) -> None:
        self.mapped.update(host.lower() for host in hosts)


def _is_loopback_literal(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def fail_closed(monkeypatch) -> Iterator[ResolverGuard]:
    """Fail the test when any code in this process resolves a host outside loopback."""
    guard = ResolverGuard()
    real_getaddrinfo = socket.getaddrinfo

    def guarded_getaddrinfo(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or name.lower() in LOCAL_NAMES or _is_loopback_literal(name):
            return real_getaddrinfo(host, port, *args, **kwargs)
        if name.lower() in guard.mapped:
            return real_getaddrinfo("127.0.0.1", port, *args, **kwargs)
        guard.refused.append(name)
        raise socket.gaierror(socket.EAI_NONAME, f"test refused to resolve public host {name!r}")

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield guard
    if guard.refused:
        pytest.fail(f"a client tried to resolve public hosts: {sorted(set(guard.refused))}")
