"""A run directory from the modelled run, laid out as ``pushsim run`` writes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sim.scenario.dump import dump_scenario
from tests.oracle.modelled import PERFECT, Flaws, run_model


def make_run_dir(directory: Path, flaws: Flaws = PERFECT) -> Path:
    """Write scenario.yaml, epoch.json, truth-0.jsonl and deliveries.sqlite into ``directory``."""
    work = directory / "ledgers"
    work.mkdir(parents=True)
    inputs, _ = run_model(work, flaws)
    run_dir = directory / "run"
    run_dir.mkdir()
    (run_dir / "scenario.yaml").write_text(dump_scenario(inputs.scenario), encoding="utf-8")
    epoch = inputs.epoch
    (run_dir / "epoch.json").write_text(
        json.dumps(
            {"wall_t0": epoch.wall_t0, "sim_t0": epoch.sim_t0, "time_scale": epoch.time_scale}
        )
    )
    shutil.copy(inputs.truth_paths[0], run_dir / "truth-0.jsonl")
    shutil.copy(inputs.delivery_path, run_dir / "deliveries.sqlite")
    return run_dir


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def flawed_run(tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("flawed"),
                        Flaws(skip=0.2, late=0.2, unavailable=0.3))  # fmt: skip
