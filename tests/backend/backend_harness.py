"""A reference backend on a loopback port with a real SQLite file, for the backend tests.

The server runs on its own event loop in a background thread, so tests use plain synchronous
httpx clients, as any SDK would from outside the process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import httpx

from sim.backend.app import BackendServer
from sim.backend.config import BackendConfig, TrackCredential

SITE_ID = "site-test"
API_KEY = "track-key-test"
WRITE_KEY = "write-key-test"
CONTROL_TOKEN = "control-token-test"

# Seconds a test waits for the server to start or stop before failing. A stop can take the
# whole shutdown timeout when a request body was in transit as shutdown began.
SHUTDOWN_TIMEOUT = 1.0
LIFECYCLE_TIMEOUT = 10.0


class RunningBackend:
    """A BackendServer on 127.0.0.1 served from a background event loop."""

    def __init__(self, config: BackendConfig, sender_factory=None) -> None:
        self.config = config
        self.sender_factory = sender_factory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server: BackendServer | None = None
        self.start()

    def _call(self, coroutine):
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=LIFECYCLE_TIMEOUT)

    def start(self) -> None:
        self.server = BackendServer(self.config, sender_factory=self.sender_factory)
        self._call(self.server.start())

    def stop(self) -> None:
        if self.server is not None:
            self._call(self.server.close())
            self.server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def shutdown(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=LIFECYCLE_TIMEOUT)
        self._loop.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    def client(self, auth: tuple[str, str] | None = None, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=auth, timeout=10.0, **kwargs)

    def track(self) -> httpx.Client:
        return self.client((SITE_ID, API_KEY))

    def cdp(self) -> httpx.Client:
        return self.client((WRITE_KEY, ""))

    def query(self, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        """Read the backend's database directly through a separate connection."""
        connection = sqlite3.connect(self.config.db_path)
        connection.row_factory = sqlite3.Row
        try:
            return connection.execute(sql, parameters).fetchall()
        finally:
            connection.close()

    def profile_of(self, kind: str, value: str) -> int | None:
        rows = self.query(
            "SELECT profile_id FROM identities WHERE kind = ? AND value = ?", (kind, value)
        )
        return rows[0]["profile_id"] if rows else None


def default_config(db_path: Path) -> BackendConfig:
    return BackendConfig(
        db_path=db_path,
        track_credentials=(TrackCredential(SITE_ID, API_KEY),),
        cdp_write_keys=(WRITE_KEY,),
        control_token=CONTROL_TOKEN,
        shutdown_timeout_seconds=SHUTDOWN_TIMEOUT,
    )
