"""Real FCM clients against the mock: firebase-admin and pyfcm, with google-auth's OAuth flow."""

from __future__ import annotations

import json
import uuid

import firebase_admin
import pytest
from firebase_admin import credentials as firebase_credentials
from firebase_admin import messaging
from pyfcm import FCMNotification
from pyfcm.baseapi import BaseAPI
from pyfcm.errors import FCMNotRegisteredError, FCMSenderIdMismatchError

from sim.gateways.hooks import TokenState
from sim.gateways.recipes import all_recipes
from tests.gateways.fcm_helpers import FcmEnv, fcm_token

# firebase-admin 7.5+ warns that Message.token is deprecated in favour of fid; backends still
# send tokens, so the suite does too.
pytestmark = pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning")


@pytest.fixture
def trust_ca(fcm: FcmEnv, monkeypatch) -> FcmEnv:
    """Make requests trust the local CA, as the firebase-admin and pyfcm recipes say."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fcm.credentials.ca_cert))
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return fcm


def recipe_for(env: FcmEnv, client: str) -> dict:
    return all_recipes(
        fcm_base_url=f"https://localhost:{env.ports.tls}",
        service_account=env.credentials.fcm_service_account,
        ca_cert=env.credentials.ca_cert,
        proxy_port=env.proxy_port,
    )[client]


@pytest.fixture
def firebase_app(trust_ca: FcmEnv, monkeypatch):
    """A firebase-admin app with the generated service account, set up by its recipe."""
    recipe = recipe_for(trust_ca, "firebase-admin")
    url = recipe["set"]["firebase_admin.messaging._MessagingService.FCM_URL"]
    monkeypatch.setattr(messaging._MessagingService, "FCM_URL", url)
    for name, value in recipe["env"].items():
        monkeypatch.setenv(name, value)
    credential = firebase_credentials.Certificate(str(trust_ca.credentials.fcm_service_account))
    app = firebase_admin.initialize_app(credential, name=f"pushsim-{uuid.uuid4().hex[:8]}")
    yield app
    firebase_admin.delete_app(app)


def test_firebase_admin_send(firebase_app, fcm):
    token = fcm_token(100)
    message = messaging.Message(
        token=token,
        data={"cart_id": "c-42"},
        notification=messaging.Notification(title="Your cart", body="Still thinking?"),
        android=messaging.AndroidConfig(priority="high", ttl=3600),
    )

    name = messaging.send(message, app=firebase_app)

    assert name.startswith(f"projects/{fcm.project}/messages/")
    request, outcome = fcm.sink.records[-1]
    assert request.token == token
    assert outcome.delivery_id == name.rsplit("/", 1)[1]
    assert request.headers["x-goog-api-format-version"] == "2"


def test_firebase_admin_send_by_fid(firebase_app, fcm):
    message = messaging.Message(fid="cXyZ0123456789abcdEFgh", data={"k": "v"})

    name = messaging.send(message, app=firebase_app)

    assert name.startswith(f"projects/{fcm.project}/messages/")


def test_firebase_admin_dry_run(firebase_app, fcm):
    name = messaging.send(messaging.Message(token=fcm_token(101)), dry_run=True, app=firebase_app)

    assert name.endswith("/messages/fake_message_id")
    assert fcm.sink.records[-1][1].delivery_id is None


def test_firebase_admin_send_each(firebase_app, fcm):
    dead = fcm_token(102)
    fcm.tokens.states[dead] = TokenState.DEAD
    messages = [messaging.Message(token=fcm_token(103 + i), data={"i": str(i)}) for i in range(3)]
    messages.append(messaging.Message(token=dead))

    batch = messaging.send_each(messages, app=firebase_app)

    assert batch.success_count == 3
    assert batch.failure_count == 1
    assert isinstance(batch.responses[3].exception, messaging.UnregisteredError)


@pytest.mark.parametrize(
    "state, error_type",
    [
        (TokenState.DEAD, messaging.UnregisteredError),
        (TokenState.WRONG_AUDIENCE, messaging.SenderIdMismatchError),
        (TokenState.THROTTLED, messaging.QuotaExceededError),
    ],
    ids=["unregistered", "sender-id-mismatch", "quota-exceeded"],
)
def test_firebase_admin_raises_own_errors(firebase_app, fcm, state, error_type):
    token = fcm_token(110)
    fcm.tokens.states[token] = state

    with pytest.raises(error_type):
        messaging.send(messaging.Message(token=token), app=firebase_app)


def test_firebase_admin_unknown_token_is_invalid_argument(firebase_app, fcm):
    token = fcm_token(111)
    fcm.tokens.states[token] = TokenState.UNKNOWN

    with pytest.raises(firebase_admin.exceptions.InvalidArgumentError):
        messaging.send(messaging.Message(token=token), app=firebase_app)


def test_firebase_admin_through_proxy(trust_ca, fail_closed, monkeypatch):
    # No URL is changed: the real hosts go through the CONNECT proxy, and the test fails if
    # anything resolves fcm.googleapis.com or oauth2.googleapis.com itself.
    account = trust_ca.credentials.fcm_service_account
    text = account.read_text()
    real_token_uri = text.replace(trust_ca.ports.token_uri, "https://oauth2.googleapis.com/token")
    account_copy = account.with_name("fcm-service-account-real-hosts.json")
    account_copy.write_text(real_token_uri)
    for name, value in recipe_for(trust_ca, "firebase-admin")["proxy_env"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    upstream_before = trust_ca.proxy.upstream_connections

    app = firebase_admin.initialize_app(
        firebase_credentials.Certificate(str(account_copy)), name="pushsim-proxy"
    )
    try:
        name = messaging.send(messaging.Message(token=fcm_token(120)), app=app)
    finally:
        firebase_admin.delete_app(app)

    assert name.startswith(f"projects/{trust_ca.project}/messages/")
    assert trust_ca.proxy.upstream_connections >= upstream_before + 2
    assert fail_closed.refused == []


@pytest.fixture
def pyfcm_client(trust_ca: FcmEnv, monkeypatch) -> FCMNotification:
    recipe = recipe_for(trust_ca, "pyfcm")
    base = recipe["set"]["pyfcm.baseapi.BaseAPI.FCM_END_POINT_BASE"]
    monkeypatch.setattr(BaseAPI, "FCM_END_POINT_BASE", base)
    return FCMNotification(service_account_file=str(trust_ca.credentials.fcm_service_account))


def test_pyfcm_notify(pyfcm_client, fcm):
    result = pyfcm_client.notify(
        fcm_token=fcm_token(130),
        notification_title="Back in stock",
        data_payload={"product_id": "p-9"},
    )

    assert result["name"].startswith(f"projects/{fcm.project}/messages/")


@pytest.mark.parametrize(
    "state, error_type",
    [
        (TokenState.DEAD, FCMNotRegisteredError),
        (TokenState.WRONG_AUDIENCE, FCMSenderIdMismatchError),
    ],
    ids=["unregistered", "sender-id-mismatch"],
)
def test_pyfcm_errors(pyfcm_client, fcm, state, error_type):
    token = fcm_token(131)
    fcm.tokens.states[token] = state

    with pytest.raises(error_type):
        pyfcm_client.notify(fcm_token=token, notification_title="Hi")


def test_pyfcm_through_proxy(trust_ca, monkeypatch):
    recipe = recipe_for(trust_ca, "pyfcm")
    monkeypatch.setattr(BaseAPI, "FCM_END_POINT_BASE", "https://fcm.googleapis.com/v1/projects")
    client = FCMNotification(
        service_account_file=str(trust_ca.credentials.fcm_service_account),
        **recipe["constructor_with_proxy"],
    )

    result = client.notify(fcm_token=fcm_token(132), notification_title="Hi")

    assert result["name"].startswith(f"projects/{trust_ca.project}/messages/")


def test_recipes_cover_known_clients(fcm):
    recipes = all_recipes(
        fcm_base_url=fcm.ports.base_url,
        service_account=fcm.credentials.fcm_service_account,
        ca_cert=fcm.credentials.ca_cert,
        apns_port=2197,
        proxy_port=fcm.proxy_port,
    )

    assert set(recipes) == {"firebase-admin", "pyfcm", "aioapns", "@parse/node-apn"}
    # aioapns 4.0's own proxy support fails on Python 3.11, so its recipe offers none.
    assert "constructor_with_proxy" not in recipes["aioapns"]
    assert recipes["@parse/node-apn"]["provider_options"]["port"] == 2197
    assert json.loads(json.dumps(recipes)) == recipes
