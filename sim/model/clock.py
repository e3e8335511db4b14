"""The clock the model runs on: any environment with SimPy's ``now``, ``timeout`` and ``process``.

``pushsim plan`` passes a ``simpy.Environment``, a virtual clock that jumps from event to event.
A live run passes a scaled real-time environment with the same three members. The model reads
time only through them, so it never touches the wall clock.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol

from simpy.events import Event, Process, Timeout


class ModelClock(Protocol):
    """The members of a SimPy environment that the model uses."""

    @property
    def now(self) -> float:
        """Simulated seconds since the run's start."""
        ...

    def timeout(self, delay: float, value: Any = None) -> Timeout: ...

    def process(self, generator: Generator[Event, Any, Any]) -> Process: ...
