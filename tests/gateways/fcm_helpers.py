"""Helpers shared by the FCM and proxy suites: scripted policies, a sink and the test env."""

from __future__ import annotations

from dataclasses import dataclass

import requests
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from sim.formats.tokens import derive_run_key, issue_token
from sim.gateways import pki
from sim.gateways.fcm_server import FcmGateway, FcmPorts
from sim.gateways.hooks import (
    ALIVE,
    NO_FAULT,
    FaultAction,
    Outcome,
    PushRequest,
    TokenState,
    TokenVerdict,
)
from sim.gateways.proxy import ConnectProxy
from sim.gateways.runner import BackgroundLoop

RUN_KEY = derive_run_key(20261204)


def fcm_token(group_id: int, sequence: int = 0) -> str:
    """Return a well-formed FCM registration token issued under the suites' run key."""
    return issue_token(RUN_KEY, "android", group_id, sequence)


class ScriptedTokens:
    """A token policy that answers a scripted state per token and ALIVE otherwise."""

    def __init__(self) -> None:
        self.states: dict[str, TokenState] = {}

    def check(self, request: PushRequest) -> TokenVerdict:
        state = self.states.get(request.token)
        return ALIVE if state is None else TokenVerdict(state)


class ScriptedFaults:
    """A fault policy that applies a scripted action per token and none otherwise."""

    def __init__(self) -> None:
        self.actions: dict[str, FaultAction] = {}

    def action(self, request: PushRequest) -> FaultAction:
        return self.actions.get(request.token, NO_FAULT)


class RecordingSink:
    """A delivery sink that keeps every ``(request, outcome)`` pair."""

    def __init__(self) -> None:
        self.records: list[tuple[PushRequest, Outcome]] = []

    def record(self, request: PushRequest, outcome: Outcome) -> None:
        self.records.append((request, outcome))


@dataclass
class FcmEnv:
    """A running FCM gateway and CONNECT proxy with their credentials and scripted seams."""

    credentials: pki.Credentials
    gateway: FcmGateway
    ports: FcmPorts
    proxy: ConnectProxy
    proxy_port: int
    loop: BackgroundLoop
    tokens: ScriptedTokens
    faults: ScriptedFaults
    sink: RecordingSink

    @property
    def project(self) -> str:
        return self.credentials.fcm_project_id

    def send_url(self, host: str = "localhost", project: str | None = None) -> str:
        return (
            f"https://{host}:{self.ports.tls}/v1/projects/{project or self.project}/messages:send"
        )

    def access_token(self) -> str:
        """Fetch an access token from the gateway's token endpoint with google-auth."""
        credentials = service_account.Credentials.from_service_account_file(
            str(self.credentials.fcm_service_account),
            scopes=["https://www.googleapis.com/auth/firebase.messaging"],
        )
        session = requests.Session()
        # requests lets REQUESTS_CA_BUNDLE from the environment override session.verify.
        session.trust_env = False
        session.verify = str(self.credentials.ca_cert)
        credentials.refresh(Request(session))
        return credentials.token
