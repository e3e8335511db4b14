"""Provider-token rules of ApnsAuth, driven by an injected clock."""

from __future__ import annotations

import pytest
from apns_support import provider_token

from sim.gateways import pki
from sim.gateways.apns_auth import SANDBOX, ApnsAuth, ConnectionAuth

T0 = 1_800_000_000.0  # wall seconds


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    return pki.ensure_credentials(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def auth(credentials):
    return ApnsAuth.from_credentials(credentials)


def _check(auth, state, token, now):
    rejection = auth.authorize(state, f"bearer {token}", SANDBOX, now)
    return None if rejection is None else rejection.reason


def test_token_expires_after_one_hour(auth, credentials):
    state = ConnectionAuth()
    token = provider_token(credentials, iat=T0)

    assert _check(auth, state, token, T0 + 10) is None
    assert _check(auth, state, token, T0 + 3600) is None
    assert _check(auth, state, token, T0 + 3601) == "ExpiredProviderToken"


def test_token_change_allowed_after_twenty_minutes(auth, credentials):
    state = ConnectionAuth()
    first = provider_token(credentials, iat=T0)
    second = provider_token(credentials, iat=T0 + 1199)
    third = provider_token(credentials, iat=T0 + 1300)

    assert _check(auth, state, first, T0) is None
    assert _check(auth, state, second, T0 + 1199) == "TooManyProviderTokenUpdates"
    assert _check(auth, state, third, T0 + 1300) is None
    assert state.token == third


def test_expired_token_may_be_replaced_early(auth, credentials):
    state = ConnectionAuth()
    old = provider_token(credentials, iat=T0 - 3500)
    fresh = provider_token(credentials, iat=T0 + 200)

    assert _check(auth, state, old, T0) is None
    assert _check(auth, state, old, T0 + 200) == "ExpiredProviderToken"
    assert _check(auth, state, fresh, T0 + 200) is None


def test_future_iat_is_invalid(auth, credentials):
    token = provider_token(credentials, iat=T0 + 3600)

    assert _check(auth, ConnectionAuth(), token, T0) == "InvalidProviderToken"


@pytest.mark.parametrize(
    "authorization",
    ["", "bearer", "basic abc", "bearer a.b.c", "bearer " + "x" * 50],
)
def test_malformed_authorization(auth, authorization):
    rejection = auth.authorize(ConnectionAuth(), authorization, SANDBOX, T0)

    expected = "MissingProviderToken" if not authorization else "InvalidProviderToken"
    assert rejection.reason == expected


def test_unknown_key_id_is_invalid(auth, credentials):
    token = provider_token(credentials, iat=T0, key_id="ABCDEFGHIJ")

    assert _check(auth, ConnectionAuth(), token, T0) == "InvalidProviderToken"


def test_wrong_team_is_invalid(auth, credentials):
    token = provider_token(credentials, iat=T0, team_id="SOMEONE123")

    assert _check(auth, ConnectionAuth(), token, T0) == "InvalidProviderToken"
