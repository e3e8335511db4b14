"""The tests' resolver maps the mock hosts to loopback and rejects every other name."""

import socket

import pytest


def test_mock_host_resolves_to_loopback():
    addresses = {info[4][0] for info in socket.getaddrinfo("api.push.apple.com", 443)}

    assert addresses == {"127.0.0.1"}


def test_public_host_is_rejected(fail_closed_resolution):
    with pytest.raises(OSError, match="only loopback and mock hosts"):
        socket.getaddrinfo("api.example.net", 443)

    assert fail_closed_resolution == ["api.example.net"]
    # Forget the attempt, which was made on purpose, so teardown does not fail this test.
    fail_closed_resolution.clear()
