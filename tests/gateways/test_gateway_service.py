"""The gateways as one service: a push on any port reaches the ledger and its shard's inbox."""

from __future__ import annotations

import json
import time

import httpx
import jwt
import pytest

from sim.formats.shards import shard_of
from sim.formats.tokens import derive_run_key, issue_token
from sim.gateways.runner import BackgroundLoop
from sim.gateways.service import GatewayOptions, GatewayService

SEED = 42


@pytest.fixture
def service(tmp_path):
    loop = BackgroundLoop().start()
    gateways = GatewayService(GatewayOptions(directory=tmp_path / "gateways"))
    config = loop.run(gateways.start())
    yield gateways, config
    loop.run(gateways.stop())
    loop.close()


def control(config) -> httpx.Client:
    headers = {"Authorization": f"Bearer {config.control_token}"}
    return httpx.Client(base_url=config.control_url, headers=headers, timeout=10)


def post_run(config, shard_count: int) -> None:
    epoch = {"wall_t0": time.time(), "sim_t0": 1_800_000_000.0, "time_scale": 60.0}
    with control(config) as client:
        response = client.post(
            "/control/run", json={"epoch": epoch, "seed": SEED, "shard_count": shard_count}
        )
    assert response.status_code == 200, response.text


def provider_token(config) -> str:
    key = open(config.apns.key_path).read()
    claims = {"iss": config.apns.team_id, "iat": int(time.time())}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": config.apns.key_id})


def test_config_names_every_endpoint(service, tmp_path):
    gateways, config = service
    path = tmp_path / "config.json"
    config.write(path)
    data = json.loads(path.read_text())
    assert data["apns"]["tls_port"] > 0
    assert data["apns"]["h2c_port"] > 0
    assert data["fcm"]["send_url"].endswith("/messages:send")
    assert "aioapns" in data["recipes"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_issued_token_reaches_its_shard(service):
    gateways, config = service
    post_run(config, shard_count=3)
    group_id = 12345
    token = issue_token(derive_run_key(SEED), "ios", group_id, 1)
    payload = {"aps": {"alert": "hi"}, "CIO": {"push": {"link": "shop://cart/c1"}}}

    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        response = client.post(
            f"http://127.0.0.1:{config.apns.h2c_port}/3/device/{token}",
            json=payload,
            headers={
                "authorization": f"bearer {provider_token(config)}",
                "apns-topic": config.apns.topic,
                "apns-push-type": "alert",
            },
        )
    assert response.status_code == 200, response.text

    shard = shard_of(group_id, 3)
    with control(config) as client:
        page = client.get(f"/inbox/{shard}", params={"after": 0, "wait": 5}).json()
        others = [
            client.get(f"/inbox/{other}", params={"after": 0, "wait": 0}).json()
            for other in range(3)
            if other != shard
        ]
    (delivery,) = page["deliveries"]
    assert delivery["token"] == token
    assert all(not other["deliveries"] for other in others)


def test_unknown_token_rejected(service):
    gateways, config = service
    post_run(config, shard_count=1)
    foreign = issue_token(derive_run_key(SEED + 1), "ios", 7, 1)
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        response = client.post(
            f"http://127.0.0.1:{config.apns.h2c_port}/3/device/{foreign}",
            json={"aps": {"alert": "hi"}},
            headers={
                "authorization": f"bearer {provider_token(config)}",
                "apns-topic": config.apns.topic,
            },
        )
    assert response.status_code == 400
    assert response.json()["reason"] == "BadDeviceToken"
