"""Run gateway servers on an asyncio event loop in a background thread.

Blocking callers that run the gateways in their own process (tests with firebase-admin or
pyfcm, a Locust worker) need an event loop beside them. ``BackgroundLoop`` runs one in a daemon
thread and passes coroutines to it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """An event loop in a daemon thread, with ``run`` to wait for a coroutine's result on it.

    Example::

        with BackgroundLoop() as loop:
            ports = loop.run(gateway.start())
            ...
            loop.run(gateway.stop())
    """

    def __init__(self, name: str = "pushsim-gateways") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> BackgroundLoop:
        self._thread.start()
        return self

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coroutine`` on the loop and return its result, waiting at most ``timeout`` s."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and join its thread."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> BackgroundLoop:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
