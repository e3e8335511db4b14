"""APNs provider authentication: ES256 provider tokens and TLS client certificates.

Token rules, as Apple documents them:

- The ``authorization`` header is ``bearer <JWT>``. The JWT header names ``alg`` (ES256) and
  ``kid``; the claims name ``iss`` (the team id) and ``iat`` (Unix seconds).
- A token older than one hour is rejected with 403 ExpiredProviderToken.
- A connection that changes its token more often than once every 20 minutes gets 429
  TooManyProviderTokenUpdates.
- Until a valid token arrives, a connection may carry only one stream (the server enforces it).

``iat`` is accepted as an integer, a float (aioapns 4.0 sends an int, other clients a float) or a
numeric string (kalyke-apns 1.5 sends ``str(int(...))``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sim.gateways.apns_reasons import Rejection, reject

Clock = Callable[[], float]

PRODUCTION = "production"
SANDBOX = "sandbox"
ENVIRONMENTS = frozenset({PRODUCTION, SANDBOX})

TOKEN_LIFETIME = 3600.0  # seconds a provider token stays valid after its iat
TOKEN_UPDATE_INTERVAL = 1200.0  # minimum seconds between token changes on one connection
# Seconds an iat may lie in the future before the token is invalid; covers clock skew.
FUTURE_IAT_TOLERANCE = 60.0

# The verified-token cache is cleared when it grows past this many entries.
_TOKEN_CACHE_SIZE = 4096

# Apple's provider certificates name their kind in the subject common name.
_CERTIFICATE_KINDS = {
    "Apple Push Services": ENVIRONMENTS,
    "Apple Development IOS Push Services": frozenset({SANDBOX}),
    "Apple Production IOS Push Services": frozenset({PRODUCTION}),
}
# Topics a universal "Apple Push Services" certificate covers besides the bundle id.
_UNIVERSAL_SUFFIXES = ("", ".voip", ".complication")


@dataclass(frozen=True)
class ProviderKey:
    """An APNs signing key the gateway accepts tokens from."""

    key_id: str
    team_id: str
    public_key: ec.EllipticCurvePublicKey
    environments: frozenset[str] = ENVIRONMENTS

    @classmethod
    def from_p8(
        cls,
        path: Path | str,
        key_id: str,
        team_id: str,
        environments: Iterable[str] = ENVIRONMENTS,
    ) -> ProviderKey:
        """Load the public half of a .p8 signing key."""
        private_key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} is not an EC private key: APNs signs with ES256 (P-256)")
        environments = frozenset(environments)
        unknown = environments - ENVIRONMENTS
        if unknown:
            raise ValueError(
                f"invalid environments {sorted(unknown)} for key {key_id}: use "
                f"{PRODUCTION!r} and/or {SANDBOX!r}"
            )
        return cls(key_id, team_id, private_key.public_key(), environments)


@dataclass(frozen=True)
class ClientCertificate:
    """A TLS client certificate as APNs reads it: its kind, bundle id and serial number."""

    common_name: str
    bundle_id: str | None
    environments: frozenset[str]
    serial_number: int

    @property
    def topics(self) -> frozenset[str]:
        """The apns-topic values this certificate may push to."""
        if self.bundle_id is None:
            return frozenset()
        if self.environments == ENVIRONMENTS:
            return frozenset(self.bundle_id + suffix for suffix in _UNIVERSAL_SUFFIXES)
        return frozenset({self.bundle_id})

    @classmethod
    def from_der(cls, der: bytes) -> ClientCertificate:
        """Read a DER certificate that the TLS layer has already verified against the CA."""
        certificate = x509.load_der_x509_certificate(der)
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = str(names[0].value) if names else ""
        kind, _, bundle_id = common_name.partition(": ")
        uids = certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
        if uids:
            bundle_id = str(uids[0].value)
        environments = _CERTIFICATE_KINDS.get(kind, frozenset())
        return cls(common_name, bundle_id or None, environments, certificate.serial_number)


@dataclass
class ConnectionAuth:
    """Authentication state of one HTTP/2 connection.

    ``token`` is the provider token in force, ``token_since`` the wall second it took effect,
    and ``team_id`` the team the connection is bound to by its first valid token.
    """

    certificate: ClientCertificate | None = None
    token: str | None = None
    token_iat: float = 0.0
    token_since: float = 0.0
    team_id: str | None = None
    key: ProviderKey | None = None

    @property
    def authenticated(self) -> bool:
        return self.certificate is not None or self.token is not None


@dataclass
class _VerifiedToken:
    key: ProviderKey
    iat: float


def _parse_iat(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@dataclass
class ApnsAuth:
    """Checks provider tokens and client certificates against the configured keys.

    ``clock`` returns wall Unix seconds; tests inject one to reach the one-hour expiry.
    ``revoked_serials`` lists the serial numbers of client certificates rejected with 403 Forbidden.
    """

    keys: Iterable[ProviderKey]
    clock: Clock = time.time
    token_lifetime: float = TOKEN_LIFETIME
    token_update_interval: float = TOKEN_UPDATE_INTERVAL
    revoked_serials: frozenset[int] = frozenset()
    _keys: dict[str, ProviderKey] = field(init=False, repr=False)
    _verified: dict[str, _VerifiedToken] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._keys = {key.key_id: key for key in self.keys}
        self._verified = {}

    @classmethod
    def from_credentials(cls, credentials, *, clock: Clock = time.time, **options) -> ApnsAuth:
        """Build the checker for the .p8 key in a ``pki.Credentials`` directory."""
        key = ProviderKey.from_p8(
            credentials.apns_key, credentials.apns_key_id, credentials.apns_team_id
        )
        return cls([key], clock=clock, **options)

    def add_key(self, key: ProviderKey) -> None:
        """Accept tokens signed by ``key`` from now on."""
        self._keys[key.key_id] = key

    def authorize(
        self, state: ConnectionAuth, authorization: str | None, environment: str, now: float
    ) -> Rejection | None:
        """Check one request's credentials and update ``state``; return None when they pass."""
        if state.certificate is not None:
            return self._check_certificate(state.certificate, environment)

        if not authorization:
            return reject("MissingProviderToken")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return reject("InvalidProviderToken")
        token = token.strip()

        # The token in force was verified when it arrived; only its age can change.
        if token == state.token:
            if now - state.token_iat > self.token_lifetime:
                return reject("ExpiredProviderToken")
            return None

        verified = self._verify(token)
        if verified is None:
            return reject("InvalidProviderToken")
        if environment not in verified.key.environments:
            return reject("BadEnvironmentKeyIdInToken")
        if state.team_id is not None and verified.key.team_id != state.team_id:
            return reject("UnrelatedKeyIdInToken")
        if verified.iat > now + FUTURE_IAT_TOLERANCE:
            return reject("InvalidProviderToken")
        if now - verified.iat > self.token_lifetime:
            return reject("ExpiredProviderToken")
        # Replacing an expired token is always allowed, however recently it took effect.
        current_expired = now - state.token_iat > self.token_lifetime
        recent = now - state.token_since < self.token_update_interval
        if state.token is not None and recent and not current_expired:
            return reject("TooManyProviderTokenUpdates")

        state.token = token
        state.token_iat = verified.iat
        state.token_since = now
        state.team_id = verified.key.team_id
        state.key = verified.key
        return None

    def _verify(self, token: str) -> _VerifiedToken | None:
        cached = self._verified.get(token)
        if cached is not None:
            return cached

        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return None
        if header.get("alg") != "ES256":
            return None
        key = self._keys.get(str(header.get("kid", "")))
        if key is None:
            return None

        try:
            # Expiry and iat are checked against the injected clock, not by PyJWT.
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=["ES256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidTokenError:
            return None
        if claims.get("iss") != key.team_id:
            return None
        iat = _parse_iat(claims.get("iat"))
        if iat is None:
            return None

        if len(self._verified) >= _TOKEN_CACHE_SIZE:
            self._verified.clear()
        verified = _VerifiedToken(key, iat)
        self._verified[token] = verified
        return verified

    def _check_certificate(
        self, certificate: ClientCertificate, environment: str
    ) -> Rejection | None:
        if not certificate.environments or certificate.bundle_id is None:
            return reject("BadCertificate")
        if environment not in certificate.environments:
            return reject("BadCertificateEnvironment")
        if certificate.serial_number in self.revoked_serials:
            return reject("Forbidden")
        return None
