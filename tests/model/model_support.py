"""Helpers for the model tests: scenarios from YAML text, and independent expected values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sim.scenario import load_scenario
from sim.scenario.schema import FUNNEL_STATES, Scenario


def scenario_from(text: str) -> Scenario:
    """Build a validated scenario from YAML text; unset sections keep their defaults."""
    return load_scenario(text=text).scenario


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def canonical(lines: list[str]) -> list[str]:
    """Sort JSON lines by (at, group, seq), the canonical order of SDK calls."""
    return sorted(lines, key=lambda line: _key(json.loads(line)))


def _key(record: dict) -> tuple:
    return (record["at"], record["group"], record["seq"])


def expected_abandonment(transitions: dict[str, dict[str, float]]) -> float:
    """Return the expected share of carts that end their session without an order.

    The funnel is solved as an absorbing Markov chain over (state, cart open) pairs. An add
    opens a cart when none is open, and an order closes it. Checkout or order without a cart
    ends the session. A row's leftover probability ends it too, abandoning an open cart.
    Expected visits come from the fundamental matrix N = (I - Q)^-1.
    """
    states = [(state, open_cart) for state in FUNNEL_STATES for open_cart in (False, True)]
    index = {state: i for i, state in enumerate(states)}
    size = len(states)
    q = np.zeros((size, size))
    opens = np.zeros(size)
    abandons = np.zeros(size)

    for (state, open_cart), i in index.items():
        row = transitions.get(state, {})
        if open_cart:
            abandons[i] += 1.0 - sum(row.values())
        for event, probability in row.items():
            if event == "added_to_cart":
                q[i, index[(event, True)]] += probability
                if not open_cart:
                    opens[i] += probability
            elif event in ("checkout_started", "order_completed") and not open_cart:
                continue
            elif event == "order_completed":
                q[i, index[(event, False)]] += probability
            else:
                q[i, index[(event, open_cart)]] += probability

    visits = np.linalg.inv(np.eye(size) - q)[index[("session_start", False)]]
    return float(visits @ abandons) / float(visits @ opens)


def weibull_cdf(t: float, shape: float, scale: float) -> float:
    """Return P(T <= t) for a Weibull time with ``shape`` and ``scale``."""
    return 1.0 - math.exp(-((t / scale) ** shape))


def within_binomial(successes: int, trials: int, p: float, sigmas: float = 4.0) -> bool:
    """Tell whether ``successes`` of ``trials`` lies within ``sigmas`` standard errors of p."""
    spread = sigmas * math.sqrt(trials * p * (1.0 - p))
    return abs(successes - trials * p) <= spread


def describe(name: str, successes: int, trials: int, p: float) -> str:
    measured = successes / trials if trials else float("nan")
    error = math.sqrt(p * (1 - p) / trials) if trials else float("nan")
    return (
        f"{name}: measured {measured:.4f} ({successes}/{trials}), expected {p:.4f} +- {error:.4f}"
    )
