"""What the oracle reads: truth ledgers, the delivery ledger, the scenario, the epoch, and the
embedded backend's store when there is one.

A run directory contains them as ``scenario.yaml`` (resolved), ``epoch.json``, ``truth*.jsonl``
(optionally gzipped), ``deliveries.sqlite`` and, for the embedded backend, ``backend.sqlite``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sim.formats.epoch import Epoch
from sim.model.arrivals import schedule
from sim.run.run_dir import read_epoch, read_status
from sim.scenario import load_scenario
from sim.scenario.schema import Scenario


@dataclass
class RunInputs:
    """One run's inputs; ``store_path`` is None for an external backend."""

    scenario: Scenario
    epoch: Epoch
    truth_paths: list[Path]
    delivery_path: Path | None
    store_path: Path | None = None
    # Time zone name per shopper group id, for quiet hours; groups not listed use UTC.
    timezones: dict[int, str] = field(default_factory=dict)
    # True when run-status.json marks the run as ended before the scenario's end.
    partial: bool = False


def group_timezones(scenario: Scenario) -> dict[int, str]:
    """Return each group's time zone from the install schedule, which is seeded per run."""
    names = list(scenario.population.timezones)
    arrivals = schedule(scenario)
    return {rank + 1: names[int(zone)] for rank, zone in enumerate(arrivals.zones)}


def load_run(run_dir: str | Path) -> RunInputs:
    """Read a run directory's inputs, raising FileNotFoundError that names what is missing."""
    run_dir = Path(run_dir)
    scenario_path = run_dir / "scenario.yaml"
    epoch_path = run_dir / "epoch.json"
    for required in (scenario_path, epoch_path):
        if not required.exists():
            raise FileNotFoundError(
                f"{required} not found: point at a run directory written by pushsim run or by "
                "Locust with pushsim's locustfile"
            )
    # truth.jsonl.gz is the name pushsim plan --truth writes; live workers write truth-N.jsonl.
    truth_paths = sorted(run_dir.glob("truth*.jsonl")) + sorted(run_dir.glob("truth*.jsonl.gz"))
    if not truth_paths:
        raise FileNotFoundError(
            f"no truth ledger (truth*.jsonl or truth*.jsonl.gz) in {run_dir}: the run's "
            "driver writes one per worker"
        )

    scenario = load_scenario(scenario_path).scenario
    # pushsim run writes {"epoch": {...}, "seed": ..., "shard_count": ...}; a bare epoch works too.
    epoch = read_epoch(run_dir)
    deliveries = run_dir / "deliveries.sqlite"
    if not deliveries.exists():
        # The gateways keep their ledger in their own directory of the run.
        deliveries = run_dir / "gateways" / "deliveries.sqlite"
    store = run_dir / "backend.sqlite"
    timezones = (
        group_timezones(scenario)
        if any(journey.quiet_hours for journey in scenario.journeys)
        else {}
    )
    return RunInputs(
        scenario=scenario,
        epoch=epoch,
        truth_paths=truth_paths,
        delivery_path=deliveries if deliveries.exists() else None,
        store_path=store if store.exists() else None,
        timezones=timezones,
        partial=bool(read_status(run_dir).get("partial")),
    )
