"""A mock of Google's OAuth2 token endpoint for service-account credentials.

A sender posts ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT`` to
``/token``. The assertion is an RS256 JWT signed with the service account's private key:
``iss`` is the account's ``client_email``, ``aud`` the token endpoint, and ``scope`` the
requested scopes. The endpoint returns ``{"access_token", "expires_in", "token_type"}``, and
the FCM gateway then checks the ``Authorization: Bearer`` header of each send against the
tokens it issued.

google-auth (2.63, ``google/auth/_helpers.py``: ``REFRESH_THRESHOLD``) fetches a new access
token 3 min 45 s (225 s) before the old one expires, so with a lifetime of 225 s or less it
fetches one before every send.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"

# Scopes that allow sending with FCM v1. firebase-admin requests cloud-platform and firebase
# among others, and pyfcm requests firebase.messaging.
SEND_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/firebase.messaging",
        "https://www.googleapis.com/auth/cloud-platform",
        "https://www.googleapis.com/auth/firebase",
    }
)

# Google accepts assertions valid for at most one hour, with a little clock skew (seconds).
MAX_ASSERTION_LIFETIME = 3600
CLOCK_SKEW = 60
DEFAULT_ACCESS_TOKEN_LIFETIME = 3600


@dataclass(frozen=True)
class ServiceAccount:
    """The public half of a service account: who it is and which key signs its assertions."""

    client_email: str
    project_id: str
    public_key: object

    @classmethod
    def from_file(cls, path: Path | str) -> ServiceAccount:
        """Load a service account JSON file as written by Google or by ``pki``."""
        account = json.loads(Path(path).read_text())
        private_key = serialization.load_pem_private_key(
            account["private_key"].encode(), password=None
        )
        return cls(account["client_email"], account["project_id"], private_key.public_key())


@dataclass(frozen=True)
class AccessGrant:
    """An access token the endpoint issued: its owner, project, scopes and wall expiry (s)."""

    client_email: str
    project_id: str
    scopes: frozenset[str]
    expires_at: float


@dataclass(frozen=True)
class TokenResponse:
    """The HTTP status and JSON body the token endpoint returns."""

    status: int
    body: dict


def _oauth_error(status: int, error: str, description: str) -> TokenResponse:
    return TokenResponse(status, {"error": error, "error_description": description})


class TokenIssuer:
    """Verify jwt-bearer assertions, issue opaque access tokens, and check them on sends.

    ``audiences`` lists the ``aud`` values accepted. google-auth 2.63 always signs for
    ``https://oauth2.googleapis.com/token``, whatever the ``token_uri`` setting, so that one is
    always accepted. ``lifetime`` is the access token lifetime in wall seconds.
    """

    def __init__(
        self,
        accounts: list[ServiceAccount],
        *,
        audiences: list[str] | tuple[str, ...] = (),
        lifetime: int = DEFAULT_ACCESS_TOKEN_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lifetime <= 0:
            raise ValueError(f"invalid access token lifetime {lifetime!r}: use whole seconds > 0")
        self.accounts = {account.client_email: account for account in accounts}
        self.audiences = set(audiences) | {GOOGLE_TOKEN_URI}
        self.lifetime = lifetime
        self.clock = clock
        self._grants: dict[str, AccessGrant] = {}

    def token_request(self, body: bytes, content_type: str = "") -> TokenResponse:
        """Verify one ``POST /token`` form (or JSON) body and return the token response."""
        if "json" in content_type:
            try:
                form = {key: str(value) for key, value in json.loads(body).items()}
            except (ValueError, AttributeError, RecursionError):
                return _oauth_error(400, "invalid_request", "The request body is not valid JSON.")
        else:
            try:
                parsed = parse_qs(body.decode("utf-8"), strict_parsing=False)
            except UnicodeDecodeError:
                return _oauth_error(400, "invalid_request", "The form body is not UTF-8.")
            form = {key: values[0] for key, values in parsed.items()}

        grant_type = form.get("grant_type")
        if grant_type is None:
            return _oauth_error(400, "invalid_request", "Missing required parameter: grant_type")
        if grant_type != JWT_BEARER_GRANT:
            return _oauth_error(
                400,
                "unsupported_grant_type",
                f"Invalid grant_type: {grant_type!r}; use {JWT_BEARER_GRANT}",
            )
        assertion = form.get("assertion")
        if not assertion:
            return _oauth_error(400, "invalid_request", "Missing required parameter: assertion")
        return self._grant(assertion)

    def _grant(self, assertion: str) -> TokenResponse:
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as error:
            return _oauth_error(400, "invalid_grant", f"Invalid JWT: {error}")

        issuer = unverified.get("iss")
        account = self.accounts.get(issuer) if isinstance(issuer, str) else None
        if account is None:
            return _oauth_error(
                400, "invalid_grant", f"Invalid grant: account not found ({issuer!r})"
            )

        try:
            claims = jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                audience=list(self.audiences),
                leeway=CLOCK_SKEW,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.InvalidSignatureError:
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        except jwt.InvalidAudienceError:
            return _oauth_error(
                400,
                "invalid_grant",
                f"Invalid JWT: aud {unverified.get('aud')!r} is not this token endpoint; "
                f"use one of {sorted(self.audiences)}",
            )
        except jwt.ExpiredSignatureError:
            return _oauth_error(
                400,
                "invalid_grant",
                "Invalid JWT: the assertion has expired; "
                "check the iat and exp values and the clock.",
            )
        except jwt.PyJWTError as error:
            return _oauth_error(400, "invalid_grant", f"Invalid JWT: {error}")

        now = self.clock()
        iat, exp = claims["iat"], claims["exp"]
        if exp - iat > MAX_ASSERTION_LIFETIME + CLOCK_SKEW or iat > now + CLOCK_SKEW:
            return _oauth_error(
                400,
                "invalid_grant",
                "Invalid JWT: the assertion must be short-lived (at most 60 minutes) and "
                "issued now; check the iat and exp values and the clock.",
            )

        scopes = frozenset(str(claims.get("scope", "")).split())
        if not scopes & SEND_SCOPES:
            return _oauth_error(
                400,
                "invalid_scope",
                f"Invalid scope {sorted(scopes)!r}: request one of {sorted(SEND_SCOPES)}",
            )

        return self._issue(account, scopes, now)

    def _issue(self, account: ServiceAccount, scopes: frozenset[str], now: float) -> TokenResponse:
        self._forget_expired(now)
        token = "ya29.pushsim-" + secrets.token_urlsafe(32)
        self._grants[token] = AccessGrant(
            account.client_email, account.project_id, scopes, now + self.lifetime
        )
        log.debug("issued an access token to %s for %d s", account.client_email, self.lifetime)
        body = {"access_token": token, "expires_in": self.lifetime, "token_type": "Bearer"}
        return TokenResponse(200, body)

    def _forget_expired(self, now: float) -> None:
        # Keep expired grants for one lifetime, so a late send still gets ACCESS_TOKEN_EXPIRED
        # rather than an unknown-token error.
        horizon = now - self.lifetime
        expired = [token for token, grant in self._grants.items() if grant.expires_at < horizon]
        for token in expired:
            del self._grants[token]

    def check_bearer(self, authorization: str | None) -> tuple[AccessGrant | None, str, str]:
        """Check an ``Authorization`` header value.

        Returns ``(grant, "", "")`` when the access token is valid, otherwise ``(None, reason,
        message)`` with Google's ErrorInfo reason: ``CREDENTIALS_MISSING``,
        ``ACCESS_TOKEN_TYPE_UNSUPPORTED`` or ``ACCESS_TOKEN_EXPIRED``.
        """
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return (
                None,
                "CREDENTIALS_MISSING",
                "Request is missing required authentication credential. Expected an OAuth 2 "
                "access token in the Authorization: Bearer header.",
            )

        grant = self._grants.get(token.strip())
        if grant is None:
            return (
                None,
                "ACCESS_TOKEN_TYPE_UNSUPPORTED",
                "Request had invalid authentication credentials: the access token was not "
                "issued by this token endpoint.",
            )
        if grant.expires_at <= self.clock():
            return (
                None,
                "ACCESS_TOKEN_EXPIRED",
                "Request had invalid authentication credentials: the access token has "
                "expired; fetch a new one from the token endpoint.",
            )
        return grant, "", ""
