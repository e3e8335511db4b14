"""FCM gateway lifecycle: ports, graceful stop, open mode, and the fail-closed resolver."""

from __future__ import annotations

import asyncio
import socket
import ssl

import httpx
import pytest

from sim.gateways import pki
from sim.gateways.fcm_rules import FcmRules
from sim.gateways.fcm_server import FcmGateway
from sim.gateways.hooks import FaultAction
from tests.gateways.fcm_helpers import FcmEnv, ScriptedFaults, fcm_token


@pytest.fixture(scope="module")
def credentials(tmp_path_factory) -> pki.Credentials:
    return pki.ensure_credentials(tmp_path_factory.mktemp("fcm-lifecycle"))


def test_stop_finishes_request_in_flight(credentials):
    faults = ScriptedFaults()
    token = fcm_token(500)
    faults.actions[token] = FaultAction(delay=0.5)
    gateway = FcmGateway(
        credentials, rules=FcmRules(fault_policy=faults), require_auth=False, graceful_timeout=3
    )
    context = ssl.create_default_context(cafile=str(credentials.ca_cert))

    async def scenario() -> tuple[int, bool]:
        ports = await gateway.start()
        url = f"https://localhost:{ports.tls}/v1/projects/p/messages:send"
        async with httpx.AsyncClient(http2=True, verify=context) as client:
            in_flight = asyncio.create_task(client.post(url, json={"message": {"token": token}}))
            await asyncio.sleep(0.2)
            await gateway.stop()
            response = await in_flight
        try:
            await asyncio.open_connection("127.0.0.1", ports.tls)
            still_listening = True
        except OSError:
            still_listening = False
        return response.status_code, still_listening

    status, still_listening = asyncio.run(scenario())

    assert status == 200
    assert still_listening is False


def test_busy_port_names_port_and_fix(credentials):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        gateway = FcmGateway(credentials, tls_port=port)

        with pytest.raises(OSError, match=rf"127\.0\.0\.1:{port}.*use 0"):
            asyncio.run(gateway.start())


def test_plain_port_can_be_off(credentials):
    async def scenario():
        gateway = FcmGateway(credentials, plain_port=None)
        ports = await gateway.start()
        await gateway.stop()
        return ports

    ports = asyncio.run(scenario())

    assert ports.plain is None
    assert ports.tls > 0


def test_open_mode_needs_no_access_token(credentials):
    gateway = FcmGateway(credentials, require_auth=False)
    context = ssl.create_default_context(cafile=str(credentials.ca_cert))

    async def scenario() -> tuple[int, int]:
        ports = await gateway.start()
        try:
            async with httpx.AsyncClient(verify=context) as client:
                send = await client.post(
                    f"{ports.base_url}/v1/projects/p/messages:send",
                    json={"message": {"token": fcm_token(501)}},
                )
                token = await client.post(f"{ports.base_url}/token", data={})
        finally:
            await gateway.stop()
        return send.status_code, token.status_code

    send_status, token_status = asyncio.run(scenario())

    assert send_status == 200
    assert token_status == 404


def test_public_lookup_is_refused(fail_closed):
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("fcm.googleapis.com", 443)

    assert fail_closed.refused == ["fcm.googleapis.com"]
    # Cleared so the fixture's own check passes: this test wanted the refusal.
    fail_closed.refused.clear()


def test_allowed_mock_host_maps_to_loopback(fcm: FcmEnv, fail_closed):
    fail_closed.allow("fcm.googleapis.com")
    context = ssl.create_default_context(cafile=str(fcm.credentials.ca_cert))
    headers = {"Authorization": f"Bearer {fcm.access_token()}"}

    with httpx.Client(http2=True, verify=context, headers=headers) as client:
        response = client.post(
            fcm.send_url(host="fcm.googleapis.com"), json={"message": {"token": fcm_token(502)}}
        )

    assert response.status_code == 200
    addresses = {info[4][0] for info in socket.getaddrinfo("fcm.googleapis.com", 443)}
    assert addresses == {"127.0.0.1"}
