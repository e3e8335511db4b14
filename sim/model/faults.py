"""SDK faults: instrumentation mistakes injected at a rate over each fault's own denominator."""

from __future__ import annotations

import dataclasses

from sim.model.streams import Stream
from sim.scenario.schema import SdkFaults

FAULT_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SdkFaults))


class FaultDice:
    """Decides each fault opportunity and counts opportunities and injections per fault."""

    def __init__(self, faults: SdkFaults):
        self.rates = {name: getattr(faults, name) for name in FAULT_NAMES}
        self.opportunities = dict.fromkeys(FAULT_NAMES, 0)
        self.injected = dict.fromkeys(FAULT_NAMES, 0)

    def roll(self, name: str, stream_owner) -> bool:
        """Count one opportunity for fault ``name`` and tell whether it is injected.

        ``stream_owner`` is the group's ``GroupStreams``. The faults substream is drawn only
        for a fault whose rate is above 0, so a run without faults never creates it.
        """
        self.opportunities[name] += 1
        rate = self.rates[name]
        if rate <= 0.0:
            return False
        stream: Stream = stream_owner.faults
        if stream.uniform() < rate:
            self.injected[name] += 1
            return True
        return False
