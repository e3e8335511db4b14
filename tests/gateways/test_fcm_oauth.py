"""The OAuth2 jwt-bearer token endpoint and the access-token check on sends."""

from __future__ import annotations

import json
import ssl
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pyfcm import FCMNotification
from pyfcm.baseapi import BaseAPI

from sim.gateways.fcm_rules import ERROR_INFO_TYPE
from sim.gateways.oauth import GOOGLE_TOKEN_URI, JWT_BEARER_GRANT
from tests.gateways.fcm_helpers import FcmEnv, fcm_token

MESSAGING_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


def service_account(env: FcmEnv) -> dict:
    return json.loads(env.credentials.fcm_service_account.read_text())


def assertion(env: FcmEnv, *, key=None, **overrides) -> str:
    account = service_account(env)
    now = int(time.time())
    claims = {
        "iss": account["client_email"],
        "aud": GOOGLE_TOKEN_URI,
        "scope": MESSAGING_SCOPE,
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, key or account["private_key"], algorithm="RS256")


@pytest.fixture
def http(fcm: FcmEnv):
    context = ssl.create_default_context(cafile=str(fcm.credentials.ca_cert))
    with httpx.Client(http2=True, verify=context, timeout=10) as client:
        yield client


def post_token(http: httpx.Client, env: FcmEnv, **form) -> httpx.Response:
    return http.post(env.ports.token_uri, data={"grant_type": JWT_BEARER_GRANT, **form})


def test_good_assertion_gets_access_token(http, fcm):
    response = post_token(http, fcm, assertion=assertion(fcm))

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    send = http.post(
        fcm.send_url(),
        json={"message": {"token": fcm_token(200)}},
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert send.status_code == 200


def test_token_uri_audience_accepted(http, fcm):
    response = post_token(http, fcm, assertion=assertion(fcm, aud=fcm.ports.token_uri))

    assert response.status_code == 200


def test_bad_signature_is_invalid_grant(http, fcm):
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    response = post_token(http, fcm, assertion=assertion(fcm, key=other_key))

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "Signature" in response.json()["error_description"]


def test_wrong_audience_is_invalid_grant(http, fcm):
    response = post_token(http, fcm, assertion=assertion(fcm, aud="https://example.test/token"))

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "aud" in response.json()["error_description"]


def test_expired_assertion_is_invalid_grant(http, fcm):
    old = int(time.time()) - 7200

    response = post_token(http, fcm, assertion=assertion(fcm, iat=old, exp=old + 3600))

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_long_lived_assertion_is_invalid_grant(http, fcm):
    now = int(time.time())

    response = post_token(http, fcm, assertion=assertion(fcm, iat=now, exp=now + 86400))

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_unknown_account_is_invalid_grant(http, fcm):
    response = post_token(http, fcm, assertion=assertion(fcm, iss="someone@else.test"))

    assert response.status_code == 400
    assert "account not found" in response.json()["error_description"]


def test_missing_scope_is_invalid_scope(http, fcm):
    response = post_token(http, fcm, assertion=assertion(fcm, scope="openid"))

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_other_grant_type_is_unsupported(http, fcm):
    response = http.post(
        fcm.ports.token_uri, data={"grant_type": "client_credentials", "assertion": "x"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_missing_assertion_is_invalid_request(http, fcm):
    response = post_token(http, fcm)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_garbage_assertion_is_invalid_grant(http, fcm):
    response = post_token(http, fcm, assertion="not.a.jwt")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def unauthenticated_reason(response: httpx.Response) -> str:
    error = response.json()["error"]
    assert error["status"] == "UNAUTHENTICATED"
    info = [d for d in error["details"] if d["@type"] == ERROR_INFO_TYPE]
    return info[0]["reason"]


def test_expired_access_token_gets_401(http, fcm, monkeypatch):
    token = fcm.access_token()
    issuer = fcm.gateway.issuer
    monkeypatch.setattr(issuer, "clock", lambda: time.time() + 3601)

    response = http.post(
        fcm.send_url(),
        json={"message": {"token": fcm_token(201)}},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status_code == 401
    assert unauthenticated_reason(response) == "ACCESS_TOKEN_EXPIRED"
    assert fcm.sink.records[-1][1].status == 401


def test_unknown_access_token_gets_401(http, fcm):
    response = http.post(
        fcm.send_url(),
        json={"message": {"token": fcm_token(202)}},
        headers={"Authorization": "Bearer ya29.made-up"},
    )

    assert response.status_code == 401
    assert unauthenticated_reason(response) == "ACCESS_TOKEN_TYPE_UNSUPPORTED"


def test_other_project_is_permission_denied(http, fcm):
    response = http.post(
        fcm.send_url(project="someone-elses-project"),
        json={"message": {"token": fcm_token(203)}},
        headers={"Authorization": f"Bearer {fcm.access_token()}"},
    )

    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"


def test_pyfcm_fetches_new_token_after_expiry(fcm, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fcm.credentials.ca_cert))
    monkeypatch.setattr(BaseAPI, "FCM_END_POINT_BASE", f"{fcm.ports.base_url}/v1/projects")
    client = FCMNotification(service_account_file=str(fcm.credentials.fcm_service_account))
    assert client.notify(fcm_token=fcm_token(204), notification_title="one")["name"]

    # An hour later the cached token is expired; pyfcm reads ACCESS_TOKEN_EXPIRED and refreshes.
    monkeypatch.setattr(fcm.gateway.issuer, "clock", lambda: time.time() + 3601)
    result = client.notify(fcm_token=fcm_token(204), notification_title="two")

    assert result["name"]
    statuses = [outcome.status for _, outcome in fcm.sink.records]
    assert statuses == [200, 401, 200]
