"""Every documented APNs reason, provoked over real TLS with httpx and HTTP/2."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import jwt
import pytest
from apns_support import (
    TOPIC,
    GatewayThread,
    RecordingSink,
    ScriptedFaults,
    ScriptedTokens,
    device_token,
    make_rules,
    provider_token,
)
from cryptography.hazmat.primitives.asymmetric import ec

from sim.gateways import pki
from sim.gateways.apns_auth import PRODUCTION, ProviderKey
from sim.gateways.apns_reasons import REASON_STATUS
from sim.gateways.apns_server import ApnsGateway
from sim.gateways.hooks import FaultAction, Service, TokenState, TokenVerdict
from sim.gateways.registry import TokenRegistry
from sim.gateways.run import RunState

SANDBOX_HOST = "api.sandbox.push.apple.com"
DIED_AT_MS = 1_700_000_000_123

# Tokens the scripted policies treat specially.
DEAD = device_token(9001)
WRONG_TOPIC = device_token(9002)
THROTTLED = device_token(9003)
UNKNOWN = device_token(9004)
FAULTS = {
    device_token(9101): FaultAction(status=410, reason="ExpiredToken"),
    device_token(9102): FaultAction(status=500),
    device_token(9103): FaultAction(status=503),
    device_token(9104): FaultAction(status=503, reason="Shutdown"),
    device_token(9105): FaultAction(status=400, reason="IdleTimeout"),
}
FAULT_TOKENS = {action.reason or str(action.status): token for token, action in FAULTS.items()}

pytestmark = pytest.mark.usefixtures("apns_hosts")


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    return pki.ensure_credentials(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory):
    """A key of another team, and a production-only key of the same team."""
    directory = tmp_path_factory.mktemp("keys")
    keys = {}
    for name, team, environments in (
        ("OTHERTEAM1", "OTHERTEAM", {"production", "sandbox"}),
        ("PRODONLY01", pki.DEFAULT_TEAM_ID, {PRODUCTION}),
    ):
        private = ec.generate_private_key(ec.SECP256R1())
        path = directory / f"AuthKey_{name}.p8"
        path.write_bytes(pki._pem_key(private))
        keys[name] = (path, ProviderKey.from_p8(path, name, team, environments))
    return keys


@pytest.fixture(scope="module")
def gateway(credentials, other_keys):
    sink = RecordingSink()
    tokens = ScriptedTokens(
        {
            DEAD: TokenVerdict(TokenState.DEAD, died_at_ms=DIED_AT_MS),
            WRONG_TOPIC: TokenVerdict(TokenState.WRONG_AUDIENCE),
            THROTTLED: TokenVerdict(TokenState.THROTTLED),
            UNKNOWN: TokenVerdict(TokenState.UNKNOWN),
        }
    )
    rules = make_rules(
        credentials,
        sink=sink,
        tokens=tokens,
        faults=ScriptedFaults(FAULTS),
        topics={pki.DEFAULT_TEAM_ID: frozenset({TOPIC}), "OTHERTEAM": frozenset({TOPIC})},
    )
    for _, key in other_keys.values():
        rules.auth.add_key(key)
    context = pki.server_ssl_context(credentials, request_client_cert=True)
    thread = GatewayThread(lambda: ApnsGateway(rules, ssl_context=context))
    thread.sink = sink
    yield thread
    thread.close()


def _client(credentials, certificate: tuple | None = None) -> httpx.Client:
    context = pki.client_ssl_context(credentials)
    if certificate is not None:
        context.load_cert_chain(*certificate)
    return httpx.Client(http2=True, verify=context, timeout=5.0)


def _headers(credentials, **overrides) -> list[tuple[str, str]]:
    headers = {
        "authorization": f"bearer {provider_token(credentials)}",
        "apns-topic": TOPIC,
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": "0",
    }
    for name, value in overrides.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return list(headers.items())


def _post(client, port, *, token=None, path=None, method="POST", headers, body=b'{"aps":{}}'):
    path = path if path is not None else f"/3/device/{token or device_token(1)}"
    url = f"https://{SANDBOX_HOST}:{port}{path}"
    return client.request(method, url, headers=headers, content=body)


def _signed(key_path, key_id, team_id) -> str:
    payload = {"iss": team_id, "iat": int(time.time())}
    token = jwt.encode(payload, key_path.read_text(), algorithm="ES256", headers={"kid": key_id})
    return f"bearer {token}"


# Each reason mapped to the keyword arguments of the _post call that provokes it.
def _cases(credentials, other_keys):
    big = b'{"aps":{},"pad":"' + b"x" * 4100 + b'"}'
    prod_path, _ = other_keys["PRODONLY01"]
    return {
        "BadCollapseId": dict(headers=_headers(credentials, apns_collapse_id="c" * 65)),
        "BadDeviceToken": dict(token="abc123", headers=_headers(credentials)),
        "BadExpirationDate": dict(headers=_headers(credentials, apns_expiration="tomorrow")),
        "BadMessageId": dict(headers=_headers(credentials, apns_id="not-a-uuid")),
        "BadPriority": dict(headers=_headers(credentials, apns_priority="7")),
        "BadTopic": dict(headers=_headers(credentials, apns_topic="com.example..shop")),
        "DeviceTokenNotForTopic": dict(token=WRONG_TOPIC, headers=_headers(credentials)),
        "DuplicateHeaders": dict(
            headers=_headers(credentials) + [("apns-topic", TOPIC)],
        ),
        "IdleTimeout": dict(token=FAULT_TOKENS["IdleTimeout"], headers=_headers(credentials)),
        "InvalidPushType": dict(headers=_headers(credentials, apns_push_type="banner")),
        "MissingDeviceToken": dict(path="/3/device/", headers=_headers(credentials)),
        "MissingTopic": dict(headers=_headers(credentials, apns_topic=None)),
        "PayloadEmpty": dict(headers=_headers(credentials), body=b""),
        "TopicDisallowed": dict(headers=_headers(credentials, apns_topic="com.other.app")),
        "ExpiredProviderToken": dict(
            headers=_headers(
                credentials,
                authorization=f"bearer {provider_token(credentials, iat=time.time() - 7200)}",
            )
        ),
        "InvalidProviderToken": dict(
            headers=_headers(credentials, authorization="bearer not.a.jwt")
        ),
        "MissingProviderToken": dict(headers=_headers(credentials, authorization=None)),
        "BadEnvironmentKeyIdInToken": dict(
            headers=_headers(
                credentials,
                authorization=_signed(prod_path, "PRODONLY01", pki.DEFAULT_TEAM_ID),
            )
        ),
        "BadPath": dict(path="/3/notification/abc", headers=_headers(credentials)),
        "MethodNotAllowed": dict(method="PUT", headers=_headers(credentials)),
        "ExpiredToken": dict(token=FAULT_TOKENS["ExpiredToken"], headers=_headers(credentials)),
        "Unregistered": dict(token=DEAD, headers=_headers(credentials)),
        "PayloadTooLarge": dict(headers=_headers(credentials), body=big),
        "TooManyRequests": dict(token=THROTTLED, headers=_headers(credentials)),
        "InternalServerError": dict(token=FAULT_TOKENS["500"], headers=_headers(credentials)),
        "ServiceUnavailable": dict(token=FAULT_TOKENS["503"], headers=_headers(credentials)),
        "Shutdown": dict(token=FAULT_TOKENS["Shutdown"], headers=_headers(credentials)),
    }


# Reasons that need a connection with history or a client certificate; tested below.
SEPARATE = {
    "UnrelatedKeyIdInToken",
    "TooManyProviderTokenUpdates",
    "BadCertificate",
    "BadCertificateEnvironment",
    "Forbidden",
}
SINGLE_REQUEST = sorted(set(REASON_STATUS) - SEPARATE)


@pytest.mark.parametrize("reason", SINGLE_REQUEST)
def test_reason_status_and_body(reason, credentials, other_keys, gateway):
    case = _cases(credentials, other_keys)[reason]
    with _client(credentials) as client:
        response = _post(client, gateway.port, **case)

    assert response.status_code == REASON_STATUS[reason]
    assert response.http_version == "HTTP/2"
    assert response.json()["reason"] == reason
    assert uuid.UUID(response.headers["apns-id"])
    if response.status_code == 410:
        assert isinstance(response.json()["timestamp"], int)


def test_unregistered_carries_timestamp(credentials, other_keys, gateway):
    case = _cases(credentials, other_keys)["Unregistered"]
    with _client(credentials) as client:
        response = _post(client, gateway.port, **case)

    assert response.json() == {"reason": "Unregistered", "timestamp": DIED_AT_MS}


def test_accepted_push_echoes_apns_id(credentials, gateway):
    apns_id = str(uuid.uuid4())
    with _client(credentials) as client:
        response = _post(client, gateway.port, headers=_headers(credentials, apns_id=apns_id))

    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["apns-id"] == apns_id
    delivered = [o for r, o in gateway.sink.accepted() if r.message_id == apns_id]
    assert len(delivered) == 1
    assert delivered[0].delivery_id


def test_generated_apns_id_is_uppercase_uuid(credentials, gateway):
    with _client(credentials) as client:
        response = _post(client, gateway.port, headers=_headers(credentials))

    apns_id = response.headers["apns-id"]
    assert apns_id == apns_id.upper()
    assert uuid.UUID(apns_id)


@pytest.mark.parametrize(
    ("push_type", "topic", "size", "status"),
    [
        ("voip", TOPIC + ".voip", 5120, 200),
        ("voip", TOPIC + ".voip", 5121, 413),
        ("alert", TOPIC, 4096, 200),
        ("alert", TOPIC, 4097, 413),
    ],
)
def test_payload_limits(push_type, topic, size, status, credentials, gateway):
    body = b'{"a":"' + b"x" * (size - 8) + b'"}'
    assert len(body) == size
    headers = _headers(credentials, apns_push_type=push_type, apns_topic=topic)
    with _client(credentials) as client:
        response = _post(client, gateway.port, headers=headers, body=body)

    assert response.status_code == status


@pytest.mark.parametrize(
    ("push_type", "topic", "priority", "reason"),
    [
        ("voip", TOPIC, "10", "InvalidPushType"),
        ("alert", TOPIC + ".voip", "10", "InvalidPushType"),
        ("background", TOPIC, "10", "BadPriority"),
        ("background", TOPIC, "5", None),
        ("liveactivity", TOPIC + ".push-type.liveactivity", "10", None),
        ("pushtotalk", TOPIC + ".voip-ptt", "10", None),
        ("location", TOPIC + ".location-query", "10", None),
        ("complication", TOPIC + ".complication", "1", None),
        ("fileprovider", TOPIC + ".pushkit.fileprovider", "5", None),
    ],
)
def test_push_type_rules(push_type, topic, priority, reason, credentials, gateway):
    headers = _headers(
        credentials, apns_push_type=push_type, apns_topic=topic, apns_priority=priority
    )
    with _client(credentials) as client:
        response = _post(client, gateway.port, headers=headers)

    if reason is None:
        assert response.status_code == 200, response.content
    else:
        assert response.json()["reason"] == reason


@pytest.mark.parametrize(
    ("push_type", "topic", "priority"),
    [
        ("voip", TOPIC + ".voip", "10"),
        ("liveactivity", TOPIC + ".push-type.liveactivity", "10"),
        ("complication", TOPIC + ".complication", "1"),
    ],
)
def test_suffixed_topic_matches_the_apps_token(credentials, push_type, topic, priority):
    # The registry checks the token against the app's bundle id, as open mode with a topic does.
    registry = TokenRegistry(RunState(), default_mode="open", default_topic=TOPIC)
    rules = make_rules(credentials, tokens=registry.for_service(Service.APNS))
    context = pki.server_ssl_context(credentials)
    thread = GatewayThread(lambda: ApnsGateway(rules, ssl_context=context))
    headers = _headers(
        credentials, apns_push_type=push_type, apns_topic=topic, apns_priority=priority
    )
    try:
        with _client(credentials) as client:
            accepted = _post(client, thread.port, headers=headers)
            # The same provider token, since a new one on a connection this soon is refused.
            other_app = _post(client, thread.port, headers=[
                (name, topic.replace(TOPIC, "com.other") if name == "apns-topic" else value)
                for name, value in headers
            ])  # fmt: skip
    finally:
        thread.close()

    assert accepted.status_code == 200, accepted.content
    assert other_app.json()["reason"] in ("TopicDisallowed", "DeviceTokenNotForTopic")


def test_token_of_other_team_on_same_connection(credentials, other_keys, gateway):
    other_path, _ = other_keys["OTHERTEAM1"]
    with _client(credentials) as client:
        first = _post(client, gateway.port, headers=_headers(credentials))
        second = _post(
            client,
            gateway.port,
            headers=_headers(
                credentials, authorization=_signed(other_path, "OTHERTEAM1", "OTHERTEAM")
            ),
        )

    assert first.status_code == 200
    assert second.status_code == 403
    assert second.json()["reason"] == "UnrelatedKeyIdInToken"


def test_token_changed_too_often(credentials, gateway):
    first_token = provider_token(credentials, iat=time.time() - 5)
    second_token = provider_token(credentials, iat=time.time())
    with _client(credentials) as client:
        first = _post(
            client,
            gateway.port,
            headers=_headers(credentials, authorization=f"bearer {first_token}"),
        )
        second = _post(
            client,
            gateway.port,
            headers=_headers(credentials, authorization=f"bearer {second_token}"),
        )
        again = _post(
            client,
            gateway.port,
            headers=_headers(credentials, authorization=f"bearer {first_token}"),
        )

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["reason"] == "TooManyProviderTokenUpdates"
    assert again.status_code == 200


@pytest.mark.parametrize(
    ("common_name", "host", "reason"),
    [
        ("Apple Push Services: com.example.shop", SANDBOX_HOST, None),
        ("Apple Development IOS Push Services: com.example.shop", SANDBOX_HOST, None),
        (
            "Apple Development IOS Push Services: com.example.shop",
            "api.push.apple.com",
            "BadCertificateEnvironment",
        ),
        ("Some Web Server", SANDBOX_HOST, "BadCertificate"),
        ("Apple Push Services: com.example.shop", "revoked", "Forbidden"),
        ("Apple Push Services: com.other.app", SANDBOX_HOST, "TopicDisallowed"),
    ],
)
def test_certificate_authentication(common_name, host, reason, credentials, gateway, tmp_path):
    certificate = pki.issue_client_certificate(credentials, tmp_path, common_name)
    if host == "revoked":
        serial = _serial(certificate[0])
        gateway.call(
            lambda: setattr(gateway.gateway.rules.auth, "revoked_serials", frozenset({serial}))
        )
        host = SANDBOX_HOST
    headers = _headers(credentials, authorization=None)
    with _client(credentials, certificate) as client:
        url = f"https://{host}:{gateway.port}/3/device/{device_token(3)}"
        response = client.post(url, headers=headers, content=b'{"aps":{}}')

    if reason is None:
        assert response.status_code == 200, response.content
    else:
        assert response.status_code == REASON_STATUS[reason]
        assert json.loads(response.content)["reason"] == reason


def _serial(cert_path) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number


def test_float_iat_is_accepted(credentials, gateway):
    token = jwt.encode(
        {"iss": credentials.apns_team_id, "iat": time.time()},
        credentials.apns_key.read_text(),
        algorithm="ES256",
        headers={"kid": credentials.apns_key_id},
    )
    headers = _headers(credentials, authorization=f"bearer {token}")
    with _client(credentials) as client:
        response = _post(client, gateway.port, headers=headers)

    assert response.status_code == 200
