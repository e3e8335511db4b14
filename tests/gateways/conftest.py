"""Fixtures for the gateway suites: fail-closed name resolution and a running FCM gateway."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

# Imported first: on CPython 3.11.7, hypothesis's pytest plugin importing it late (at the
# terminal summary) failed with "AST constructor recursion depth mismatch" once the
# firebase-admin and pyfcm tests had run.
import hypothesis  # noqa: F401
import pytest

from sim.gateways import pki
from sim.gateways.fcm_rules import FcmRules
from sim.gateways.fcm_server import FcmGateway
from sim.gateways.proxy import ConnectProxy, gateway_routes
from sim.gateways.runner import BackgroundLoop
from tests.gateways.fcm_helpers import FcmEnv, RecordingSink, ScriptedFaults, ScriptedTokens

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


@pytest.fixture(scope="module")
def fcm_env(tmp_path_factory) -> Iterator[FcmEnv]:
    """Start an FCM gateway (TLS and h2c) and a CONNECT proxy to it on loopback."""
    directory = tmp_path_factory.mktemp("fcm-credentials")
    credentials = pki.ensure_credentials(directory)
    tokens = ScriptedTokens()
    faults = ScriptedFaults()
    sink = RecordingSink()

    rules = FcmRules(token_policy=tokens, fault_policy=faults)
    gateway = FcmGateway(credentials, rules=rules, sink=sink, graceful_timeout=1.0)
    loop = BackgroundLoop().start()
    ports = loop.run(gateway.start())
    pki.ensure_credentials(directory, token_uri=ports.token_uri)

    proxy = ConnectProxy(gateway_routes(fcm_tls_port=ports.tls))
    proxy_port = loop.run(proxy.start())

    env = FcmEnv(credentials, gateway, ports, proxy, proxy_port, loop, tokens, faults, sink)
    try:
        yield env
    finally:
        loop.run(proxy.stop())
        loop.run(gateway.stop())
        loop.close()


@pytest.fixture
def fcm(fcm_env: FcmEnv) -> Iterator[FcmEnv]:
    """The module's FCM gateway with its scripted tokens, faults and records cleared."""
    fcm_env.tokens.states.clear()
    fcm_env.faults.actions.clear()
    fcm_env.sink.records.clear()
    yield fcm_env
    fcm_env.tokens.states.clear()
    fcm_env.faults.actions.clear()
