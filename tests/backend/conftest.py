"""Fixtures for the backend suites: loopback-only name resolution and test credentials."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from sim.gateways import pki

_LOOPBACK_NAMES = frozenset({"localhost"})


def _is_loopback(name: str) -> bool:
    if name.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail the test when anything resolves a name outside loopback, Apple's and Google's too.

    The sender dials the mock gateways by address, so it never needs a public name. A refused
    lookup is remembered, because clients may swallow the error and retry.
    """
    refused: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def guarded_getaddrinfo(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or _is_loopback(name):
            return real_getaddrinfo(host, port, *args, **kwargs)
        refused.append(name)
        raise socket.gaierror(socket.EAI_NONAME, f"test refused to resolve {name!r}")

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield refused
    assert not refused, f"the sender tried to resolve public hosts: {sorted(set(refused))}"


@pytest.fixture(scope="module")
def credentials(tmp_path_factory) -> pki.Credentials:
    """A CA, an APNs .p8 key and an FCM service account, generated for this module."""
    return pki.ensure_credentials(tmp_path_factory.mktemp("credentials"))
