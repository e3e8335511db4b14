"""aioapns 4.x against the mock APNs gateway over TLS.

Recipe for pointing aioapns at the mock, used by every test here:

- aioapns connects to ``APNsDevelopmentClientProtocol.APNS_SERVER`` (with ``use_sandbox=True``,
  api.development.push.apple.com) on the class attribute ``APNS_PORT``. The test sets
  ``APNS_PORT`` to the gateway's port and lets the name resolve to 127.0.0.1 (the fail-closed
  resolver fixture maps the mock host names to loopback).
- ``ssl_context`` is a client context that trusts the local CA and offers no ALPN, as aioapns's
  own default context does. The server certificate names Apple's hosts, so hostname checks pass.
"""

from __future__ import annotations

import asyncio
import collections
import time

import pytest
from aioapns import APNs, NotificationRequest, PushType
from aioapns.connection import APNsDevelopmentClientProtocol, APNsProductionClientProtocol
from apns_support import TOPIC, RecordingSink, ScriptedTokens, device_token, make_rules

from sim.gateways import pki
from sim.gateways.apns_server import ApnsGateway, ConnectionScript, GoawayPlan
from sim.gateways.hooks import Service, TokenState, TokenVerdict
from sim.gateways.registry import TokenRegistry
from sim.gateways.run import RunState
from tests.gateways.worldkit import apns_token, run_config

UNKNOWN = device_token(7001)

pytestmark = pytest.mark.usefixtures("apns_hosts")


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    return pki.ensure_credentials(tmp_path_factory.mktemp("pki"))


def _run(coroutine, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def _start(monkeypatch, credentials, *, clock=time.time, script=None):
    sink = RecordingSink()
    tokens = ScriptedTokens({UNKNOWN: TokenVerdict(TokenState.UNKNOWN)})
    rules = make_rules(credentials, sink=sink, tokens=tokens, clock=clock)
    gateway = ApnsGateway(rules, ssl_context=pki.server_ssl_context(credentials), script=script)
    port = await gateway.start()
    monkeypatch.setattr(APNsDevelopmentClientProtocol, "APNS_PORT", port)
    return gateway, _client(credentials), sink


def _client(credentials, *, use_sandbox: bool = True) -> APNs:
    """Return an aioapns client with the test's key, trusting the local CA without ALPN."""
    return APNs(
        key=credentials.apns_key.read_text(),
        key_id=credentials.apns_key_id,
        team_id=credentials.apns_team_id,
        topic=TOPIC,
        use_sandbox=use_sandbox,
        ssl_context=pki.client_ssl_context(credentials, alpn=None),
    )


def _request(number: int) -> NotificationRequest:
    return NotificationRequest(
        device_token=device_token(number),
        message={"aps": {"alert": f"cart {number}"}},
        push_type=PushType.ALERT,
        priority=10,
    )


def test_aioapns_push_accepted(monkeypatch, credentials):
    async def scenario():
        gateway, client, sink = await _start(monkeypatch, credentials)
        request = _request(1)
        result = await client.send_notification(request)
        client.pool.close()
        await gateway.stop(grace=1.0)
        return request, result, sink

    request, result, sink = _run(scenario())

    assert result.is_successful
    assert result.notification_id == request.notification_id
    assert [r.message_id for r, _ in sink.accepted()] == [request.notification_id]


def test_aioapns_bad_device_token(monkeypatch, credentials):
    async def scenario():
        gateway, client, _ = await _start(monkeypatch, credentials)
        request = NotificationRequest(device_token=UNKNOWN, message={"aps": {}})
        result = await client.send_notification(request)
        client.pool.close()
        await gateway.stop(grace=1.0)
        return result

    result = _run(scenario())

    assert result.status == "400"
    assert result.description == "BadDeviceToken"


def test_aioapns_expired_provider_token(monkeypatch, credentials):
    # The gateway's clock runs 61 minutes ahead, so aioapns's fresh token is already stale.
    def clock():
        return time.time() + 61 * 60

    async def scenario():
        gateway, client, sink = await _start(monkeypatch, credentials, clock=clock)
        result = await client.send_notification(_request(2))
        client.pool.close()
        await gateway.stop(grace=1.0)
        return result, sink

    result, sink = _run(scenario())

    assert result.status == "403"
    assert result.description == "ExpiredProviderToken"
    assert sink.accepted() == []


def test_aioapns_resends_after_goaway(monkeypatch, credentials):
    # The first connection responds to 5 pushes and ignores 5 more, then sends GOAWAY in the
    # middle of the flight. aioapns must re-send the rest on a new connection.
    def script(number: int) -> ConnectionScript:
        if number == 1:
            return ConnectionScript(goaway=GoawayPlan(after_requests=5, ignored_requests=5))
        return ConnectionScript()

    async def scenario():
        gateway, client, sink = await _start(monkeypatch, credentials, script=script)
        requests = [_request(100 + i) for i in range(30)]
        results = await asyncio.gather(*(client.send_notification(r) for r in requests))
        connections = next(gateway._numbers) - 1
        client.pool.close()
        await gateway.stop(grace=1.0)
        return requests, results, sink, connections

    requests, results, sink, connections = _run(scenario())

    assert all(result.is_successful for result in results)
    accepted = collections.Counter(r.message_id for r, _ in sink.accepted())
    assert set(accepted) == {r.notification_id for r in requests}
    assert max(accepted.values()) == 1
    assert len(sink.accepted()) == 30
    assert connections >= 2


def test_aioapns_certificate_push_accepted(monkeypatch, credentials, tmp_path):
    # aioapns loads the certificate and its key from one PEM file.
    bundle = tmp_path / "apns-client-bundle.pem"
    bundle.write_bytes(credentials.client_cert.read_bytes() + credentials.client_key.read_bytes())

    async def scenario():
        sink = RecordingSink()
        context = pki.server_ssl_context(credentials, request_client_cert=True)
        gateway = ApnsGateway(make_rules(credentials, sink=sink), ssl_context=context)
        port = await gateway.start()
        monkeypatch.setattr(APNsDevelopmentClientProtocol, "APNS_PORT", port)
        client = APNs(
            client_cert=str(bundle),
            topic=TOPIC,
            use_sandbox=True,
            ssl_context=pki.client_ssl_context(credentials, alpn=None),
        )
        result = await client.send_notification(_request(3))
        client.pool.close()
        await gateway.stop(grace=1.0)
        return result, sink

    result, sink = _run(scenario())

    assert result.is_successful
    assert len(sink.accepted()) == 1


@pytest.mark.parametrize("use_sandbox", [False, True])
def test_aioapns_token_of_other_environment_refused(monkeypatch, credentials, use_sandbox):
    """A store build's token works only with production, and a development build's only with
    the sandbox. aioapns picks the host, and so the environment, from ``use_sandbox``."""
    registry = TokenRegistry(RunState(run_config()))
    rules = make_rules(credentials, tokens=registry.for_service(Service.APNS))
    store_build = apns_token(31)
    development_build = apns_token(32, environment="sandbox")

    async def scenario():
        gateway = ApnsGateway(rules, ssl_context=pki.server_ssl_context(credentials))
        port = await gateway.start()
        protocol = APNsDevelopmentClientProtocol if use_sandbox else APNsProductionClientProtocol
        monkeypatch.setattr(protocol, "APNS_PORT", port)
        client = _client(credentials, use_sandbox=use_sandbox)
        results = []
        for token in (store_build, development_build):
            request = NotificationRequest(device_token=token, message={"aps": {"alert": "hi"}})
            results.append(await client.send_notification(request))
        client.pool.close()
        await gateway.stop(grace=1.0)
        return results

    store, development = _run(scenario())

    rejected, accepted = (store, development) if use_sandbox else (development, store)
    assert accepted.is_successful
    assert (rejected.status, rejected.description) == ("400", "BadDeviceToken")
