"""kalyke-apns 1.5 against the mock APNs gateway over TLS.

kalyke checks responses strictly: a 200 must carry ``apns-id``, and an error body's ``reason``
must name one of its exception classes. Recipe for pointing it at the mock: a subclass adds the
gateway's port to kalyke's sandbox URL, and kalyke's ``AsyncClient`` is replaced by one whose
TLS context trusts the local CA. The host name resolves to loopback through the fail-closed
resolver fixture.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

import httpx2
import kalyke.clients.apns
import pytest
from apns_support import TOPIC, RecordingSink, ScriptedTokens, device_token, make_rules
from kalyke import ApnsClient, ApnsConfig, Payload, PayloadAlert, exceptions

from sim.gateways import pki
from sim.gateways.apns_server import ApnsGateway
from sim.gateways.hooks import TokenState, TokenVerdict

DEAD = device_token(6001)


@dataclass(frozen=True)
class LocalApnsClient(ApnsClient):
    """kalyke's client with a port on its sandbox URL."""

    port: int = 443

    @property
    def _base_url(self) -> str:
        return f"https://api.sandbox.push.apple.com:{self.port}"


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    return pki.ensure_credentials(tmp_path_factory.mktemp("pki"))


async def _send(monkeypatch, credentials, token: str):
    sink = RecordingSink()
    tokens = ScriptedTokens({DEAD: TokenVerdict(TokenState.DEAD, died_at_ms=1_700_000_000_000)})
    gateway = ApnsGateway(
        make_rules(credentials, sink=sink, tokens=tokens),
        ssl_context=pki.server_ssl_context(credentials),
    )
    port = await gateway.start()
    trusted = functools.partial(httpx2.AsyncClient, verify=pki.client_ssl_context(credentials))
    monkeypatch.setattr(kalyke.clients.apns, "AsyncClient", trusted)
    client = LocalApnsClient(
        use_sandbox=True,
        team_id=credentials.apns_team_id,
        auth_key_id=credentials.apns_key_id,
        auth_key_filepath=credentials.apns_key,
        port=port,
    )
    payload = Payload(alert=PayloadAlert(title="Your cart", body="still there"))
    try:
        return await client.send_message(token, payload, ApnsConfig(topic=TOPIC)), sink
    finally:
        await gateway.stop(grace=1.0)


def test_kalyke_push_accepted(monkeypatch, credentials):
    apns_id, sink = asyncio.run(_send(monkeypatch, credentials, device_token(1)))

    assert [r.message_id for r, _ in sink.accepted()] == [apns_id]


def test_kalyke_unregistered_raises(monkeypatch, credentials):
    with pytest.raises(exceptions.Unregistered) as raised:
        asyncio.run(_send(monkeypatch, credentials, DEAD))

    assert raised.value.error == {"timestamp": 1_700_000_000_000}
