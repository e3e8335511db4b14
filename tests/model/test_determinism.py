"""Determinism: the same seed gives the same plan, and shards add up to the single run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from model_support import canonical, read_lines, scenario_from

from sim.model import group as group_module
from sim.model.plan import run_plan
from sim.model.streams import GroupStreams

SCENARIO = """
seed: 11
clock: {duration: 1d}
population: {installs: 400, multi_device: 0.3, shared_device: 0.3}
tokens:
  rotation: {fcm_refresh: 3, os_update: 2, restore: 1}
sdk_faults:
  token_before_identify: 0.3
  logout_keeps_device: 0.3
  handover_reinstall: 0.3
  late_background_rotation: 0.3
  anonymous_track_after_identify: 0.3
  duplicate_app_opened: 0.1
  event_name_drift: 0.3
  sku_as_object: 0.1
"""


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("single") / "events.jsonl"
    result = run_plan(scenario_from(SCENARIO), events_path=path)
    return result.summary, read_lines(path)


def test_same_seed_same_hash(single_run):
    summary, _ = single_run
    again = run_plan(scenario_from(SCENARIO)).summary

    assert again["plan_hash"] == summary["plan_hash"]
    assert again["sdk_calls"]["total"] > 1000


def test_other_seed_other_hash(single_run):
    summary, _ = single_run
    other = run_plan(scenario_from(SCENARIO.replace("seed: 11", "seed: 12"))).summary

    assert other["plan_hash"] != summary["plan_hash"]


def test_events_file_is_canonical(single_run):
    _, lines = single_run

    assert lines == canonical(lines)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_shard_union_equals_single_run(single_run, tmp_path, count):
    summary, lines = single_run
    scenario = scenario_from(SCENARIO)
    union: list[str] = []
    groups = 0
    for index in range(count):
        path = tmp_path / f"events-{index}.jsonl"
        shard = run_plan(scenario, shard=(index, count), events_path=path).summary
        union += read_lines(path)
        groups += shard["population"]["groups"]

    assert groups == summary["population"]["groups"]
    assert canonical(union) == lines


def test_one_group_changes_alone(single_run, monkeypatch, tmp_path):
    _, lines = single_run
    changed_group = 5

    class ChangedStreams(GroupStreams):
        def __init__(self, seed: int, group_id: int):
            super().__init__(seed + (1 if group_id == changed_group else 0), group_id)

    monkeypatch.setattr(group_module, "GroupStreams", ChangedStreams)
    path = tmp_path / "events.jsonl"
    run_plan(scenario_from(SCENARIO), events_path=path)
    changed = read_lines(path)

    def split(stream: list[str]) -> tuple[list[str], list[str]]:
        mine = [line for line in stream if json.loads(line)["group"] == changed_group]
        others = [line for line in stream if json.loads(line)["group"] != changed_group]
        return mine, others

    before_mine, before_others = split(lines)
    after_mine, after_others = split(changed)
    assert after_others == before_others
    assert after_mine != before_mine


def test_hash_same_across_processes(tmp_path):
    hashes = set()
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, "-m", "sim.cli", "plan", "minimal", "--out", str(out)],
            check=True,
            capture_output=True,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )
        hashes.add(json.loads((out / "summary.json").read_text())["plan_hash"])

    assert len(hashes) == 1
