"""Fixtures for the backend suites: running backends, loopback-only names and credentials."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from backend_harness import RunningBackend, default_config

from sim.gateways import pki


@pytest.fixture
def make_backend(tmp_path: Path) -> Iterator:
    """Return a factory that starts a backend with config overrides, stopped at teardown."""
    started: list[RunningBackend] = []

    def make(**overrides) -> RunningBackend:
        config = dataclasses.replace(default_config(tmp_path / "backend.db"), **overrides)
        backend = RunningBackend(config)
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.shutdown()


@pytest.fixture
def backend(make_backend) -> RunningBackend:
    return make_backend()


@pytest.fixture
def track(backend: RunningBackend) -> Iterator[httpx.Client]:
    with backend.track() as client:
        yield client


@pytest.fixture
def cdp(backend: RunningBackend) -> Iterator[httpx.Client]:
    with backend.cdp() as client:
        yield client


@pytest.fixture
def make_journey_backend(tmp_path: Path) -> Iterator:
    """Return a factory of backends that run ``journeys`` with a recording push sender."""
    from journey_harness import RecordingSender

    started: list[RunningBackend] = []

    def make(journeys, sender=None, **overrides):
        sender = sender if sender is not None else RecordingSender()
        overrides.setdefault("journey_poll_seconds", 0.02)
        config = dataclasses.replace(
            default_config(tmp_path / "backend.db"), journeys=tuple(journeys), **overrides
        )
        backend = RunningBackend(config, sender_factory=sender)
        started.append(backend)
        return backend, sender

    yield make
    for backend in started:
        backend.shutdown()


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
