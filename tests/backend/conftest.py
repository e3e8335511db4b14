"""Fixtures that start the reference backend for each test and stop it afterwards."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from backend_harness import RunningBackend, default_config


@pytest.fixture
def make_backend(tmp_path: Path) -> Iterator:
    """Return a factory that starts a backend with config overrides, stopped at teardown."""
    started: list[RunningBackend] = []

    def make(**overrides) -> RunningBackend:
        config = dataclasses.replace(default_config(tmp_path / "backend.db"), **overrides)
        backend = RunningBackend(config)
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.shutdown()


@pytest.fixture
def backend(make_backend) -> RunningBackend:
    return make_backend()


@pytest.fixture
def track(backend: RunningBackend) -> Iterator[httpx.Client]:
    with backend.track() as client:
        yield client


@pytest.fixture
def cdp(backend: RunningBackend) -> Iterator[httpx.Client]:
    with backend.cdp() as client:
        yield client


@pytest.fixture
def make_journey_backend(tmp_path: Path) -> Iterator:
    """Return a factory of backends that run ``journeys`` with a recording push sender."""
    from journey_harness import RecordingSender

    started: list[RunningBackend] = []

    def make(journeys, sender=None, **overrides):
        sender = sender if sender is not None else RecordingSender()
        overrides.setdefault("journey_poll_seconds", 0.02)
        config = dataclasses.replace(
            default_config(tmp_path / "backend.db"), journeys=tuple(journeys), **overrides
        )
        backend = RunningBackend(config, sender_factory=sender)
        started.append(backend)
        return backend, sender

    yield make
    for backend in started:
        backend.shutdown()
