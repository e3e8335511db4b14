"""Checks of a Locust run's setup against its scenario, made before and as the epoch goes out.

A check either returns the problem that stops the run or logs a warning and lets it go on. The
checks cover the backend URL and whether the backend that receives the epoch also gets the SDK
calls. They also cover whether its journeys are the scenario's, and which of a worker's own
options the master's replace.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from sim.driver.http import backend_url_problem
from sim.run.preflight import target_unreachable
from sim.scenario.dump import differing_settings, journey_to_plain, scenario_to_plain
from sim.scenario.schema import Scenario

log = logging.getLogger(__name__)

DEFAULT_SCENARIO = "cart_recovery"
MISSING_HOST = "missing backend URL: pass --host http://HOST:PORT (the backend under test)"
# Differing keys named in a warning before "and N more".
SHOWN_KEYS = 5


def host_problem(host: str) -> str | None:
    """Return why Locust's ``--host`` cannot be the backend under test, or None.

    It must be an http or https URL that accepts a TCP connection, as pushsim run checks
    ``--target``: a run against nothing would fail every SDK call until its end.
    """
    if not host:
        return MISSING_HOST
    problem = backend_url_problem(host)
    if problem is not None:
        return f"{problem}; give the backend under test as --host"
    return target_unreachable(host, option="--host")


def same_server(first: str, second: str) -> bool:
    """Tell whether two URLs name the same scheme, host and port; localhost is 127.0.0.1."""

    def server(url: str) -> tuple:
        parts = urlsplit(url)
        host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
        default_port = 443 if parts.scheme == "https" else 80
        return parts.scheme, host, parts.port or default_port

    return server(first) == server(second)


def check_backend_journeys(response: object, scenario: Scenario) -> None:
    """Warn when the reference backend runs other journeys than the scenario describes.

    ``response`` is the backend's response to the epoch. The names are compared, and then each
    journey's settings, since a journey that waits 30 minutes in the backend and 2 hours in
    the scenario is judged against the wrong due times.
    """
    if not isinstance(response, dict) or "journeys" not in response:
        return  # a backend that does not report its journeys
    running = sorted(response["journeys"])
    expected = sorted(journey.name for journey in scenario.journeys)
    if running != expected:
        log.warning(
            "pushsim: the backend runs the journeys %s, but the scenario %s has %s, so the report "
            "will judge pushes the backend was never asked to send; start pushsim backend with "
            "--scenario and the same scenario file",
            ", ".join(running) or "(none)",
            scenario.name,
            ", ".join(expected) or "(none)",
        )
        return

    settings = response.get("journey_settings")
    if not isinstance(settings, dict):
        return  # a backend from before journey settings were reported
    for journey in scenario.journeys:
        backend_settings = settings.get(journey.name)
        scenario_settings = journey_to_plain(journey)
        differing = differing_settings(backend_settings, scenario_settings)
        if not differing:
            continue
        differences = ", ".join(
            f"{path} (backend {_setting_at(backend_settings, path)!r}, scenario "
            f"{_setting_at(scenario_settings, path)!r})"
            for path in differing[:SHOWN_KEYS]
        )
        log.warning(
            "pushsim: the backend's journey %s differs from the scenario's in %s%s, so the report "
            "will judge its pushes against settings the backend does not use; start pushsim "
            "backend with --scenario and the same scenario file and --set options",
            journey.name,
            differences,
            _more(differing),
        )


def _setting_at(settings: object, path: str) -> object:
    """Return the value at a dotted ``path`` of plain settings, or None where it is missing."""
    value = settings
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _more(differing: list[str]) -> str:
    hidden = len(differing) - SHOWN_KEYS
    return f" and {hidden} more" if hidden > 0 else ""


def pushsim_options_given(options: Any) -> bool:
    """Tell whether Locust's ``options`` give a scenario other than the default, or overrides."""
    return bool(
        getattr(options, "scenario", None) not in (None, "", DEFAULT_SCENARIO)
        or getattr(options, "pushsim_set", None)
        or getattr(options, "seed", None) is not None
        or getattr(options, "time_scale", None)
    )


def note_replaced_worker_options(own: Scenario | None, master: Scenario) -> None:
    """Log which of a worker's own scenario settings the master's options replaced."""
    if own is None:
        return
    differing = differing_settings(scenario_to_plain(own), scenario_to_plain(master))
    if not differing:
        return
    log.warning(
        "pushsim: this worker runs the master's scenario %s; its own options, which differ in "
        "%s%s, are not used",
        master.name,
        ", ".join(differing[:SHOWN_KEYS]),
        _more(differing),
    )
