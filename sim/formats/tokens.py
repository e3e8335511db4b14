"""Self-describing device tokens.

A token issued by the model carries its owning group, a sequence number and a MAC under the run
key, so the gateways recognise it and route its pushes to the right shard with no registration step.

Layout, before encoding: a 16-byte MAC followed by a 16-byte header masked with a keystream
derived from the MAC. The header is ``version, platform, group id (8 bytes), sequence (4 bytes),
APNs environment, 1 reserved byte``. Masking makes every byte look random, as real tokens do.
The environment byte is 0 for production and 1 for sandbox, the environment of an iOS app built
with the development entitlement; FCM has no environments, so Android tokens carry 0.

- APNs: the 32 bytes as 64 lowercase hex characters.
- FCM: ``<instance id>:APA91b<suffix>`` in URL-safe base64, where the instance id encodes the MAC
  and the suffix the masked header followed by keystream padding, giving the observed length of
  about 150 characters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from functools import lru_cache
from typing import NamedTuple

TOKEN_VERSION = 1
PLATFORMS = ("ios", "android")
_PLATFORM_CODE = {"ios": 1, "android": 2}
PRODUCTION, SANDBOX = "production", "sandbox"
# Tokens issued before the environment byte existed carry 0 there, so they read as production.
_ENVIRONMENT_CODE = {PRODUCTION: 0, SANDBOX: 1}
_ENVIRONMENT_OF_CODE = {code: name for name, code in _ENVIRONMENT_CODE.items()}
_HEADER = struct.Struct(">BBQIBx")
_MAC_BYTES = 16
_SHA256_BLOCK = 64  # bytes
_FCM_PAD_BYTES = 80

APNS_TOKEN_PATTERN = re.compile(r"^[0-9a-fA-F]{64}$")
# Registration tokens seen from FCM: an instance id, a colon, then "APA91b" and base64url text.
FCM_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{11,64}:APA91b[A-Za-z0-9_-]{20,400}$")


class TokenInfo(NamedTuple):
    """Fields that an issued token's bytes carry."""

    platform: str
    group_id: int
    sequence: int
    environment: str = PRODUCTION


def derive_run_key(seed: int) -> bytes:
    """Return the run key for a seed, so the same seed gives the same tokens."""
    return hashlib.blake2b(str(seed).encode(), digest_size=32, person=b"pushsim-runkey").digest()


def run_key_id(run_key: bytes) -> str:
    """Return 16 hex digits of the run key's SHA-256, which tell runs apart but not the key."""
    return hashlib.sha256(run_key).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _keystream(run_key: bytes, mac: bytes, length: int) -> bytes:
    # SHAKE-256 output for a shorter length is a prefix of a longer one, so parsing needs only
    # the first header-sized bytes whatever the platform.
    return hashlib.shake_256(b"pushsim-mask" + run_key + mac).digest(length)


@lru_cache(maxsize=8)
def _hmac_pads(run_key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """Return SHA-256 states that have absorbed the key XOR ipad and XOR opad (RFC 2104)."""
    key = hashlib.sha256(run_key).digest() if len(run_key) > _SHA256_BLOCK else run_key
    key = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key))
    outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))
    return inner, outer


def _mac(run_key: bytes, header: bytes) -> bytes:
    # HMAC-SHA256 from copies of precomputed pad states, which skips the key setup per call.
    # hmac.digest is as fast in a tight loop, but in a profiled gateway with other threads it
    # took 11 us a call, most likely because it releases the GIL every time.
    inner, outer = _hmac_pads(run_key)
    inner = inner.copy()
    inner.update(header)
    outer = outer.copy()
    outer.update(inner.digest())
    return outer.digest()[:_MAC_BYTES]


def _xor(data: bytes, mask: bytes) -> bytes:
    """Return ``data`` XOR the first ``len(data)`` bytes of ``mask``."""
    length = len(data)
    mixed = int.from_bytes(data, "big") ^ int.from_bytes(mask[:length], "big")
    return mixed.to_bytes(length, "big")


def issue_token(
    run_key: bytes, platform: str, group_id: int, sequence: int, environment: str = PRODUCTION
) -> str:
    """Return the device token for ``(group_id, sequence)`` in the platform's wire shape.

    ``environment`` is the APNs environment the token works with; only an iOS token may be
    for the sandbox.
    """
    if platform not in _PLATFORM_CODE:
        raise ValueError(f"invalid platform {platform!r}: use one of {', '.join(PLATFORMS)}")
    if environment not in _ENVIRONMENT_CODE or (platform != "ios" and environment != PRODUCTION):
        raise ValueError(
            f"invalid environment {environment!r} for platform {platform!r}: use {PRODUCTION!r}, "
            f"or {SANDBOX!r} for an iOS development build"
        )
    header = _HEADER.pack(
        TOKEN_VERSION, _PLATFORM_CODE[platform], group_id, sequence, _ENVIRONMENT_CODE[environment]
    )
    mac = _mac(run_key, header)

    if platform == "ios":
        mask = _keystream(run_key, mac, len(header))
        return (mac + _xor(header, mask)).hex()

    stream = _keystream(run_key, mac, len(header) + _FCM_PAD_BYTES)
    masked = _xor(header, stream)
    return f"{_b64(mac)}:APA91b{_b64(masked + stream[len(header) :])}"


def is_well_formed(token: str, platform: str) -> bool:
    """Tell whether ``token`` has the wire shape of its platform, issued by pushsim or not."""
    pattern = APNS_TOKEN_PATTERN if platform == "ios" else FCM_TOKEN_PATTERN
    return bool(pattern.match(token))


def parse_token(run_key: bytes, token: str) -> TokenInfo | None:
    """Return what an issued token carries, or None when the run key did not issue it."""
    try:
        if APNS_TOKEN_PATTERN.match(token):
            raw = bytes.fromhex(token)
            mac, masked = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        elif FCM_TOKEN_PATTERN.match(token):
            instance, _, rest = token.partition(":")
            mac = _unb64(instance)
            masked = _unb64(rest[len("APA91b") :])[: _HEADER.size]
        else:
            return None
    except ValueError:
        return None
    if len(mac) != _MAC_BYTES or len(masked) != _HEADER.size:
        return None

    mask = _keystream(run_key, mac, _HEADER.size)
    header = _xor(masked, mask)
    if not hmac.compare_digest(_mac(run_key, header), mac):
        return None

    version, platform_code, group_id, sequence, environment_code = _HEADER.unpack(header)
    if version != TOKEN_VERSION or environment_code not in _ENVIRONMENT_OF_CODE:
        return None
    platform = "ios" if platform_code == 1 else "android"
    environment = _ENVIRONMENT_OF_CODE[environment_code]
    return TokenInfo(platform, group_id, sequence, environment)
