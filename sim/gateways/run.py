"""The run settings the gateways receive over the control API before the first push.

The orchestrator posts the epoch, the run key and the shard count once per run. Every part of the
gateways reads them from one shared ``RunState``, so no part keeps its own notion of simulated
time or of the key that issued the tokens.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sim.formats.epoch import Epoch
from sim.gateways.hooks import Service

MODES = ("registry", "open")
MAX_SHARDS = 10_000  # far above any Locust worker count, and it keeps shard numbers readable


@dataclass(frozen=True)
class RunConfig:
    """One run's settings. ``topic`` and ``project`` are empty when any audience is accepted."""

    epoch: Epoch
    run_key: bytes
    shard_count: int
    mode: str = "registry"
    topic: str = ""
    project: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"invalid mode {self.mode!r}: use one of {', '.join(MODES)}")
        if not 1 <= self.shard_count <= MAX_SHARDS:
            raise ValueError(
                f"invalid shard_count {self.shard_count}: use one shard per Locust worker, "
                f"from 1 to {MAX_SHARDS}"
            )
        if len(self.run_key) < 16:
            raise ValueError(
                f"invalid run_key of {len(self.run_key)} bytes: send at least 16 bytes as hex"
            )

    def audience(self, service: Service) -> str:
        """Return the APNs topic or FCM project this run expects, empty when any is accepted."""
        return self.topic if service is Service.APNS else self.project


class RunState:
    """Holder of the current ``RunConfig``, replaced whole so readers never see half of one."""

    def __init__(self, config: RunConfig | None = None) -> None:
        self._config = config
        # Wall Unix time in seconds at which the current config was installed, None before.
        self.posted_at: float | None = None
        self._lock = threading.Lock()
        self._listeners: list = []

    @property
    def config(self) -> RunConfig | None:
        return self._config

    def set(self, config: RunConfig) -> None:
        """Install ``config`` and tell every listener, in the order they subscribed."""
        with self._lock:
            self._config = config
            self.posted_at = time.time()
            listeners = list(self._listeners)
        for listener in listeners:
            listener(config)

    def subscribe(self, listener) -> None:
        """Call ``listener(config)`` each time a new run config is installed."""
        with self._lock:
            self._listeners.append(listener)
