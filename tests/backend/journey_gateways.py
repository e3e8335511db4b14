"""Mock APNs and FCM gateways on a background event loop, for journey tests over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

from sender_support import apns_rig, fcm_rig

from sim.formats.gateway_config import ApnsEndpoint, FcmEndpoint, GatewayConfig
from sim.gateways import pki


class GatewayLoop:
    """Mock APNs and FCM gateways served from one background event loop."""

    def __init__(self, credentials) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()
        self.apns = self._call(self._stack.enter_async_context(apns_rig(credentials)))
        self.fcm = self._call(self._stack.enter_async_context(fcm_rig(credentials)))

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def close(self) -> None:
        self._call(self._stack.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def write_config(self, credentials: pki.Credentials, path: Path) -> Path:
        """Write a gateways' config file that points a backend's sender at these gateways."""
        apns, fcm = self.apns.settings, self.fcm.settings
        config = GatewayConfig(
            ca_cert=str(credentials.ca_cert),
            apns=ApnsEndpoint(
                host="127.0.0.1",
                tls_port=apns.port,
                key_path=apns.key_path,
                key_id=apns.key_id,
                team_id=apns.team_id,
                topic=apns.topic,
            ),
            fcm=FcmEndpoint(
                service_account=fcm.service_account,
                project_id=credentials.fcm_project_id,
                token_uri=fcm.token_uri,
                send_url=fcm.send_url,
            ),
        )
        config.write(path)
        return path
