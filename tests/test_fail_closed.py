"""The tests' resolver lets only loopback resolve, and mock hosts only when a test allows them."""

import socket

import pytest


def test_mock_host_resolves_when_allowed(fail_closed):
    fail_closed.allow("api.push.apple.com")
    addresses = {info[4][0] for info in socket.getaddrinfo("api.push.apple.com", 443)}

    assert addresses == {"127.0.0.1"}


def test_public_host_is_rejected(fail_closed):
    with pytest.raises(OSError, match="refused to resolve public host"):
        socket.getaddrinfo("api.example.net", 443)

    assert fail_closed.refused == ["api.example.net"]
    # Forget the attempt, which was made on purpose, so teardown does not fail this test.
    fail_closed.refused.clear()
