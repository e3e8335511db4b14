"""The records a run directory contains beside its ledgers: scenario, epoch and how the run ended.

``pushsim run`` writes them for its own rehearsal, and the Locust plugin writes them for a plain
Locust run, so ``pushsim report`` judges both the same way. docs/report-format.md lists every
file of a run directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from sim.formats.epoch import Epoch
from sim.scenario.dump import dump_scenario
from sim.scenario.schema import Scenario

SCENARIO_FILE = "scenario.yaml"
EPOCH_FILE = "epoch.json"
STATUS_FILE = "run-status.json"


def write_scenario(run_dir: Path, scenario: Scenario) -> Path:
    """Write the resolved scenario, readable by its owner only, and return its path."""
    path = run_dir / SCENARIO_FILE
    path.write_text(dump_scenario(scenario))
    path.chmod(0o600)  # target.api_key and target.write_key are secrets
    return path


def epoch_record(epoch: Epoch, seed: int, shard_count: int) -> dict:
    """Return the run's announcement: its epoch, seed and shard count.

    The gateways take this body at ``/control/run``, and ``epoch.json`` contains the same.
    """
    return {
        "epoch": {
            "wall_t0": epoch.wall_t0,
            "sim_t0": epoch.sim_t0,
            "time_scale": epoch.time_scale,
        },
        "seed": seed,
        "shard_count": shard_count,
    }


def write_epoch(run_dir: Path, record: dict) -> Path:
    """Write ``epoch.json`` from :func:`epoch_record`'s announcement and return its path."""
    path = run_dir / EPOCH_FILE
    path.write_text(json.dumps(record, indent=2))
    return path


def read_epoch(run_dir: Path) -> Epoch:
    """Return the epoch of ``epoch.json``, raising FileNotFoundError or ValueError."""
    data = json.loads((run_dir / EPOCH_FILE).read_text(encoding="utf-8"))
    return Epoch.from_mapping(data.get("epoch", data))


def write_status(
    run_dir: Path,
    partial_reason: str | None,
    backend: str,
    naive: list[str],
    final: bool = True,
) -> Path:
    """Write ``run-status.json``: whether the run ended early, and the backend under test.

    ``backend`` is "reference" for pushsim's reference backend, else the backend's URL, and
    ``naive`` lists the reference backend's naive switches that were on. A run writes a status
    that is not ``final``, partial with a reason, when it starts, so that a run killed before
    its end reads as partial rather than complete.
    """
    marker = {
        "partial": partial_reason is not None,
        "reason": partial_reason,
        "backend": backend,
        "naive": list(naive),
        "final": final,
    }
    path = run_dir / STATUS_FILE
    path.write_text(json.dumps(marker, indent=2))
    return path


def read_status(run_dir: Path) -> dict:
    """Return the run's ``run-status.json``, or {} when the run did not write a valid one."""
    try:
        status = json.loads((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return status if isinstance(status, dict) else {}


def scenario_faults(scenario: Scenario) -> dict:
    """Return the gateways' ``/control/faults`` body that replaces their faults with the scenario's.

    Gateways started without this scenario still run an earlier run's faults, or none.
    """
    # The dump writes each fault as a scenario file does, which the control API validates.
    written = yaml.safe_load(dump_scenario(scenario))
    return {"faults": written["gateways"]["faults"], "replace": True, "anchor": "run"}
