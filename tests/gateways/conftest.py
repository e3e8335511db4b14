"""Fixtures for the gateway suites: a running FCM gateway and APNs host names."""

from __future__ import annotations

from collections.abc import Iterator

# Imported first: on CPython 3.11.7, hypothesis's pytest plugin importing it late (at the
# terminal summary) failed with "AST constructor recursion depth mismatch" once the
# firebase-admin and pyfcm tests had run.
import hypothesis  # noqa: F401
import pytest

from sim.gateways import pki
from sim.gateways.fcm_rules import FcmRules
from sim.gateways.fcm_server import FcmGateway
from sim.gateways.proxy import APNS_HOSTS, ConnectProxy, gateway_routes
from sim.gateways.runner import BackgroundLoop
from tests.gateways.fcm_helpers import FcmEnv, RecordingSink, ScriptedFaults, ScriptedTokens


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


@pytest.fixture
def apns_hosts(fail_closed):
    """Let Apple's host names, which APNs clients hard-code, resolve to the loopback mock."""
    fail_closed.allow(*APNS_HOSTS)
    return fail_closed
