"""The in-session funnel: a Markov chain over retention events; leftover probability ends it."""

from __future__ import annotations

from sim.scenario.schema import FUNNEL_STATES, Funnel

START = "session_start"


class FunnelChain:
    """Next-event sampler built from ``scenario.funnel.transitions``."""

    def __init__(self, funnel: Funnel):
        self.rows: dict[str, list[tuple[float, str]]] = {}
        for state in FUNNEL_STATES:
            cumulative = 0.0
            row = []
            for event, probability in funnel.transitions.get(state, {}).items():
                cumulative += probability
                row.append((cumulative, event))
            self.rows[state] = row

    def next_event(self, state: str, u: float) -> str | None:
        """Return the event after ``state`` for the uniform draw ``u``, or None to end."""
        for bound, event in self.rows[state]:
            if u < bound:
                return event
        return None
