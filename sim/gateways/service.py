"""The gateways as one service: mock APNs and FCM, the CONNECT proxy and the control API.

Everything shares one event loop and one ``GatewayWorld``, so a push accepted on any port lands
in the same ledger and the same shard inboxes. ``start`` returns the config that a backend and
the Locust driver need, which ``pushsim gateways`` writes to a file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sim.formats.gateway_config import ApnsEndpoint, FcmEndpoint, GatewayConfig
from sim.gateways import pki
from sim.gateways.apns_auth import ApnsAuth
from sim.gateways.apns_rules import ApnsRules
from sim.gateways.apns_server import ApnsGateway
from sim.gateways.control import serve_control, stop_control
from sim.gateways.fcm_rules import FcmRules
from sim.gateways.fcm_server import FcmGateway
from sim.gateways.hooks import Service
from sim.gateways.proxy import ConnectProxy, gateway_routes
from sim.gateways.recipes import all_recipes
from sim.gateways.world import GatewayWorld
from sim.scenario import Scenario

log = logging.getLogger(__name__)


@dataclass
class GatewayOptions:
    """Directory and ports of the gateways; port 0 picks a free one."""

    directory: Path
    host: str = "127.0.0.1"
    apns_port: int = 0
    apns_no_alpn_port: int = 0
    apns_h2c_port: int = 0
    fcm_port: int = 0
    fcm_plain_port: int = 0
    control_port: int = 0
    proxy_port: int = 0
    open_mode: bool = False
    access_token_lifetime: int = 3600
    extra: dict = field(default_factory=dict)


class GatewayService:
    """Starts and stops every gateway server around one GatewayWorld."""

    def __init__(self, options: GatewayOptions, scenario: Scenario | None = None) -> None:
        # The config file names files in this directory; absolute paths keep it valid for
        # clients started from any working directory.
        options.directory = Path(options.directory).resolve()
        self.options = options
        self.scenario = scenario
        self.credentials = pki.ensure_credentials(options.directory / "credentials")
        mode = "open" if options.open_mode else None
        world_options = {"topic": self.credentials.apns_topic,
                         "project": self.credentials.fcm_project_id}  # fmt: skip
        if mode:
            world_options["mode"] = mode
        ledger = options.directory / "deliveries.sqlite"
        self.ledger_path = ledger
        if scenario is not None:
            self.world = GatewayWorld.from_scenario(scenario, ledger, **world_options)
        else:
            self.world = GatewayWorld(ledger, **world_options)
        self.servers: list = []
        self._control_runner = None
        self.config: GatewayConfig | None = None

    def _apns(self, ssl_alpn: list[str] | None, tls: bool, port: int) -> ApnsGateway:
        rules = ApnsRules(
            auth=ApnsAuth.from_credentials(self.credentials),
            tokens=self.world.token_policy(Service.APNS),
            faults=self.world.fault_policy,
            sink=self.world.sink,
        )
        context = (
            pki.server_ssl_context(self.credentials, alpn=ssl_alpn, request_client_cert=True)
            if tls
            else None
        )
        return ApnsGateway(
            rules,
            host=self.options.host,
            port=port,
            ssl_context=context,
            hooks=self.world.hooks(Service.APNS),
        )

    async def start(self) -> GatewayConfig:
        """Start every server and return the config clients need."""
        options = self.options
        self.world.start()

        apns_tls = self._apns(["h2"], True, options.apns_port)
        apns_no_alpn = self._apns(None, True, options.apns_no_alpn_port)
        apns_h2c = self._apns(None, False, options.apns_h2c_port)
        ports = {}
        for name, server in (("tls", apns_tls), ("no_alpn", apns_no_alpn), ("h2c", apns_h2c)):
            ports[name] = await server.start()
            self.servers.append(server)

        fcm_rules = FcmRules(
            token_policy=self.world.token_policy(Service.FCM),
            fault_policy=self.world.fault_policy,
        )
        fcm = FcmGateway(
            self.credentials,
            rules=fcm_rules,
            sink=self.world.sink,
            host=options.host,
            tls_port=options.fcm_port,
            plain_port=options.fcm_plain_port,
            access_token_lifetime=options.access_token_lifetime,
            hooks=self.world.hooks(Service.FCM),
        )
        fcm_ports = await fcm.start()
        self.servers.append(fcm)
        token_uri = f"{fcm_ports.base_url}/token"
        pki.ensure_credentials(options.directory / "credentials", token_uri=token_uri)

        proxy = ConnectProxy(
            gateway_routes(fcm_tls_port=fcm_ports.tls, apns_port=ports["tls"]),
            host=options.host,
            port=options.proxy_port,
        )
        proxy_port = await proxy.start()
        self.servers.append(proxy)

        self._control_runner, control_port = await serve_control(
            self.world, options.host, options.control_port
        )

        credentials = self.credentials
        self.config = GatewayConfig(
            ca_cert=str(credentials.ca_cert),
            control_url=f"http://{options.host}:{control_port}",
            control_token=self.world.control_token,
            proxy_url=f"http://{options.host}:{proxy_port}",
            mode=self.world.default_mode,
            ledger=str(self.ledger_path.resolve()),  # readable from any working directory
            apns=ApnsEndpoint(
                host=options.host,
                tls_port=ports["tls"],
                tls_no_alpn_port=ports["no_alpn"],
                h2c_port=ports["h2c"],
                key_path=str(credentials.apns_key),
                key_id=credentials.apns_key_id,
                team_id=credentials.apns_team_id,
                topic=credentials.apns_topic,
                client_cert=str(credentials.client_cert),
                client_key=str(credentials.client_key),
            ),
            fcm=FcmEndpoint(
                host=options.host,
                tls_port=fcm_ports.tls,
                plain_port=fcm_ports.plain or 0,
                project_id=credentials.fcm_project_id,
                service_account=str(credentials.fcm_service_account),
                token_uri=token_uri,
                send_url=f"{fcm_ports.base_url}/v1/projects/{credentials.fcm_project_id}"
                "/messages:send",
            ),
            recipes=all_recipes(
                fcm_base_url=fcm_ports.base_url,
                service_account=credentials.fcm_service_account,
                ca_cert=credentials.ca_cert,
                apns_port=ports["tls"],
                proxy_port=proxy_port,
            ),
        )
        return self.config

    async def stop(self) -> None:
        """Stop every server, then close the ledger so that no recorded push is lost."""
        for server in reversed(self.servers):
            try:
                await server.stop()
            except Exception:  # one server failing to stop must not keep the ledger open
                log.exception("stopping %s failed", type(server).__name__)
        self.servers.clear()
        if self._control_runner is not None:
            await stop_control(self._control_runner)
            self._control_runner = None
        self.world.close()
