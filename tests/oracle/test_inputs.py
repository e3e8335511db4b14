"""Reading a run directory: shards, gzip ledgers, missing files and group time zones."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from sim.formats.truth import read_records
from sim.oracle.inputs import group_timezones, load_run
from sim.oracle.judge import judge_run
from sim.oracle.outcomes import JudgeContext, quiet_end
from sim.oracle.triggers import Trigger
from sim.scenario import load_scenario
from tests.oracle.ledgers import ORIGIN, QUIET_SCENARIO_TEXT, Story, write_run_dir


def two_shopper_story() -> Story:
    story = Story()
    token = story.shopper()
    story.add_to_cart(1000.0)
    story.push(2800.0, token)
    story.shopper(device="d2-0", person="p2-0", token=2, user_id="p2-0")
    for record in story.records[-6:]:
        record["group"] = 2
    story.add_to_cart(1500.0, "c2-1", device="d2-0", person="p2-0", user_id="p2-0")
    story.records[-1]["group"] = 2
    story.records[-2]["group"] = 2
    return story


def test_shards_plain_and_gzip(tmp_path):
    story = two_shopper_story()
    inputs, run_dir = write_run_dir(story, tmp_path)
    records = list(read_records(inputs.truth_paths[0]))
    with open(run_dir / "truth-0.jsonl", "w") as shard:
        shard.writelines(json.dumps(r) + "\n" for r in records if r["group"] == 1)
    with gzip.open(run_dir / "truth-1.jsonl.gz", "wt") as shard:
        shard.writelines(json.dumps(r) + "\n" for r in records if r["group"] == 2)

    loaded = load_run(run_dir)
    assert len(loaded.truth_paths) == 2
    sharded = judge_run(loaded)
    whole = judge_run(inputs)
    assert [(r.trigger_id, r.outcome) for r in sharded.rows] == [
        (r.trigger_id, r.outcome) for r in whole.rows
    ]
    assert {r.outcome for r in sharded.rows} == {"delivered", "not_sent"}


def test_missing_truth_ledger(tmp_path):
    _, run_dir = write_run_dir(Story(), tmp_path)
    with pytest.raises(FileNotFoundError, match="no truth ledger"):
        load_run(run_dir)


def test_missing_epoch(tmp_path):
    _, run_dir = write_run_dir(Story(), tmp_path)
    (run_dir / "epoch.json").unlink()
    with pytest.raises(FileNotFoundError, match="epoch.json not found"):
        load_run(run_dir)


def test_without_delivery_ledger(tmp_path):
    story = Story()
    story.shopper()
    story.add_to_cart(1000.0)
    inputs, run_dir = write_run_dir(story, tmp_path)
    shutil.copy(inputs.truth_paths[0], run_dir / "truth-0.jsonl")
    (run_dir / "deliveries.sqlite").unlink()
    loaded = load_run(run_dir)
    assert loaded.delivery_path is None
    assert loaded.store_path is None
    assert judge_run(loaded).rows[0].outcome == "not_sent"


def test_unattributed_push_counted(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(1000.0)
    story.push(2800.0, token, "c9-9")
    result = judge_run(story.write(tmp_path))
    assert result.unattributed_pushes == 1
    assert result.rows[0].outcome == "not_sent"


def test_group_timezones_from_schedule():
    scenario = load_scenario(text=QUIET_SCENARIO_TEXT).scenario
    zones = group_timezones(scenario)
    assert zones
    assert set(zones.values()) <= set(scenario.population.timezones)
    assert min(zones) == 1


def test_quiet_hours_in_local_time():
    scenario = load_scenario(text=QUIET_SCENARIO_TEXT).scenario
    context = JudgeContext(
        journey=scenario.journeys[0], index=index_with_group(), epoch=None, origin=ORIGIN,
        horizon=86400.0, drain=3600.0, exits={}, timezones={1: "America/New_York"},
    )  # fmt: skip
    # 06:00 UTC is 01:00 in New York (UTC-5 in November): quiet until 08:00 local, 13:00 UTC.
    trigger = Trigger("j", "j:c", "p1-0", "d1-0", "c", 6 * 3600.0 - 1800.0, 6 * 3600.0, {})
    assert quiet_end(trigger, context) == 13 * 3600.0
    # 14:00 UTC is 09:00 in New York: not quiet.
    trigger.due = 14 * 3600.0
    assert quiet_end(trigger, context) is None


def index_with_group():
    from sim.oracle.ledger import TruthIndex

    index = TruthIndex()
    index.device_group["d1-0"] = 1
    return index
