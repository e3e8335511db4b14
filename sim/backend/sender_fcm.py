"""Send pushes with the FCM HTTP v1 API over aiohttp, authenticated by a service account.

google-auth signs the jwt-bearer assertion and exchanges it at the account's ``token_uri``. Its
HTTP client is blocking (requests), so the exchange runs in a thread, one at a time, and the
access token is reused until ``refresh_margin`` seconds before it expires.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import google.auth.exceptions
import requests
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from sim.backend.sender_jobs import PushJob, PushService
from sim.backend.sender_outcomes import (
    CONNECTION_ERROR,
    OAUTH_ERROR,
    TIMEOUT,
    AttemptResult,
    classify_fcm,
    parse_fcm_error,
)
from sim.backend.sender_payloads import fcm_message
from sim.backend.sender_retry import parse_retry_after

log = logging.getLogger(__name__)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_SEND_URL = "https://fcm.googleapis.com/v1/projects/{project}/messages:send"


@dataclass(frozen=True)
class FcmSettings:
    """How to reach FCM and authenticate as a service account.

    ``project_id`` defaults to the service account's project, ``send_url`` to Google's URL for
    that project, and ``token_uri`` to the one in the service account file. ``ca_cert`` is a PEM
    file of CAs to trust instead of the system store, for both the send and the token request.
    ``refresh_margin`` is how many seconds before expiry an access token is replaced.
    """

    service_account: str
    project_id: str = ""
    send_url: str = ""
    token_uri: str = ""
    ca_cert: str | None = None
    max_connections: int = 16
    refresh_margin: float = 300.0


def _load_service_account(path: str) -> dict:
    try:
        info = json.loads(Path(path).read_text())
    except OSError as error:
        raise ValueError(
            f"cannot read the FCM service account {path!r}: {error.strerror}. Set "
            "service_account to the JSON key file from the Firebase console"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"FCM service account {path!r} is not valid JSON: {error}") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ValueError(
            f"FCM service account {path!r} is not a service account key: expected "
            '"type": "service_account"'
        )
    return info


class AccessTokenSource:
    """OAuth2 access tokens for one service account, fetched with google-auth and cached."""

    def __init__(
        self,
        info: dict,
        *,
        token_uri: str = "",
        ca_cert: str | None = None,
        refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if token_uri:
            info = {**info, "token_uri": token_uri}
        self.credentials = service_account.Credentials.from_service_account_info(
            info, scopes=[FCM_SCOPE]
        )
        self.ca_cert = ca_cert
        self.refresh_margin = refresh_margin
        self.clock = clock
        self.fetches = 0
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """Return a cached access token, fetching a new one near its expiry."""
        async with self._lock:
            if self._token is None or self._expires_at - self.clock() <= self.refresh_margin:
                loop = asyncio.get_running_loop()
                self._token, self._expires_at = await loop.run_in_executor(None, self._fetch)
                self.fetches += 1
            return self._token

    def invalidate(self) -> None:
        """Forget the cached token, so the next call fetches a new one."""
        self._token = None

    def _fetch(self) -> tuple[str, float]:
        session = requests.Session()
        if self.ca_cert:
            # requests lets REQUESTS_CA_BUNDLE from the environment override session.verify,
            # so the environment is ignored when a CA is given.
            session.trust_env = False
            session.verify = self.ca_cert
        try:
            self.credentials.refresh(Request(session))
        finally:
            session.close()

        # google-auth stores expiry as a naive UTC datetime.
        expiry = self.credentials.expiry
        if expiry is None:
            expires_at = self.clock() + 3600.0
        else:
            expires_at = expiry.replace(tzinfo=datetime.UTC).timestamp()
        return self.credentials.token, expires_at


class FcmTransport:
    """One aiohttp session that sends jobs to FCM and classifies each response."""

    service = PushService.FCM

    def __init__(self, settings: FcmSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        info = _load_service_account(settings.service_account)
        self.project_id = settings.project_id or info.get("project_id", "")
        if not self.project_id:
            raise ValueError(
                f"no FCM project id: set project_id, or use a service account "
                f"({settings.service_account}) that names its project"
            )
        self.send_url = settings.send_url or FCM_SEND_URL.format(project=self.project_id)
        self.tokens = AccessTokenSource(
            info,
            token_uri=settings.token_uri,
            ca_cert=settings.ca_cert,
            refresh_margin=settings.refresh_margin,
            clock=clock,
        )
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session. Connections open on the first send."""
        context = ssl.create_default_context(cafile=self.settings.ca_cert or None)
        connector = aiohttp.TCPConnector(ssl=context, limit=self.settings.max_connections)
        self.session = aiohttp.ClientSession(connector=connector)
        log.info("FCM sender ready: %s", self.send_url)

    async def send(self, job: PushJob, timeout: float) -> AttemptResult:
        """Send ``job`` once, waiting at most ``timeout`` seconds, and classify the response."""
        if self.session is None:
            raise RuntimeError("the FCM transport is not started: call start() first")
        body = fcm_message(job)

        sent_at = self.clock()
        try:
            access_token = await asyncio.wait_for(self.tokens.token(), timeout)
        except (google.auth.exceptions.GoogleAuthError, requests.RequestException) as error:
            detail = f"access token request failed: {type(error).__name__}: {error}"
            return self._no_response(OAUTH_ERROR, sent_at, detail)
        except TimeoutError:
            return self._no_response(OAUTH_ERROR, sent_at, "access token request timed out")

        headers = {"Authorization": f"Bearer {access_token}"}
        try:
            async with self.session.post(
                self.send_url,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock())
                text = await response.text()
        except TimeoutError:
            return self._no_response(TIMEOUT, sent_at, f"no response within {timeout} s")
        except aiohttp.ClientError as error:
            return self._no_response(CONNECTION_ERROR, sent_at, f"{type(error).__name__}: {error}")

        try:
            document = json.loads(text)
        except ValueError:
            document = None

        if status == 200:
            name = document.get("name", "") if isinstance(document, dict) else ""
            return AttemptResult(200, "", classify_fcm(200, ""), sent_at, message_id=name)

        error = parse_fcm_error(status, document)
        reason = error.auth_reason if status == 401 and error.auth_reason else error.code
        return AttemptResult(
            status,
            reason,
            classify_fcm(status, error.code, error),
            sent_at,
            retry_after=retry_after,
            detail=_error_message(document),
        )

    def _no_response(self, reason: str, sent_at: float, detail: str) -> AttemptResult:
        return AttemptResult(None, reason, classify_fcm(None, reason), sent_at, detail=detail)

    async def reauthenticate(self) -> None:
        """Drop the cached access token after FCM rejected it."""
        self.tokens.invalidate()

    async def close(self) -> None:
        """Close the HTTP session and its connections."""
        if self.session is not None:
            await self.session.close()
            self.session = None


def _error_message(document: object) -> str:
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        return str(document["error"].get("message", ""))[:200]
    return ""
