"""Self-describing device tokens: the fields they carry, and the values they reject."""

from __future__ import annotations

import pytest

from sim.formats.tokens import (
    PRODUCTION,
    SANDBOX,
    derive_run_key,
    is_well_formed,
    issue_token,
    parse_token,
)

RUN_KEY = derive_run_key(11)


@pytest.mark.parametrize(
    ("platform", "environment"),
    [("ios", PRODUCTION), ("ios", SANDBOX), ("android", PRODUCTION)],
)
def test_token_round_trip(platform, environment):
    token = issue_token(RUN_KEY, platform, 123_456_789, 42, environment)

    info = parse_token(RUN_KEY, token)

    assert is_well_formed(token, platform)
    assert info is not None
    assert (info.platform, info.group_id, info.sequence, info.environment) == (
        platform,
        123_456_789,
        42,
        environment,
    )


def test_environments_give_different_tokens():
    production = issue_token(RUN_KEY, "ios", 7, 1, PRODUCTION)
    sandbox = issue_token(RUN_KEY, "ios", 7, 1, SANDBOX)

    assert production != sandbox
    assert issue_token(RUN_KEY, "ios", 7, 1) == production


def test_android_token_has_no_sandbox():
    with pytest.raises(ValueError, match="invalid environment 'sandbox' for platform 'android'"):
        issue_token(RUN_KEY, "android", 7, 1, SANDBOX)


def test_unknown_environment_named_with_the_fix():
    with pytest.raises(ValueError, match="'staging'.*use 'production', or 'sandbox'"):
        issue_token(RUN_KEY, "ios", 7, 1, "staging")


def test_changed_environment_byte_fails_the_mac():
    token = issue_token(RUN_KEY, "ios", 7, 1, SANDBOX)
    raw = bytearray(bytes.fromhex(token))
    # Byte 14 of the masked header (after the 16-byte MAC) is the environment.
    raw[16 + 14] ^= 0x01

    assert parse_token(RUN_KEY, raw.hex()) is None
    assert parse_token(derive_run_key(12), token) is None
