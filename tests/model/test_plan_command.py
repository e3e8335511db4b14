"""``pushsim plan`` as a user runs it: output, files, and mistakes on the command line."""

from __future__ import annotations

import hashlib
import json

from sim.cli import main
from sim.formats.truth import encode


def test_plan_writes_summary_and_events(tmp_path, capsys):
    status = main(["plan", "minimal", "--out", str(tmp_path), "--events"])
    output = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    events = (tmp_path / "events.jsonl").read_bytes()

    assert status == 0
    assert f"plan hash {summary['plan_hash']}" in output
    assert hashlib.sha256(events).hexdigest() == summary["plan_hash"]
    assert events.count(b"\n") == summary["sdk_calls"]["total"]
    assert "cart_recovery (event): triggers" in output
    assert f"wrote {tmp_path / 'summary.json'}, {tmp_path / 'events.jsonl'}" in output


def test_plan_summary_names_clock_start(tmp_path, capsys):
    main(["plan", "minimal", "--set", "clock.start=2026-12-04T06:00:00Z", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())

    assert summary["clock_start"] == "2026-12-04T06:00:00Z"
    assert "simulated days from 2026-12-04T06:00:00Z" in capsys.readouterr().out


def test_plan_warns_of_earlier_events_file(tmp_path, capsys):
    main(["plan", "minimal", "--out", str(tmp_path), "--events"])
    capsys.readouterr()

    status = main(["plan", "minimal", "--seed", "8", "--out", str(tmp_path)])
    error = capsys.readouterr().err

    assert status == 0
    assert f"{tmp_path / 'events.jsonl'} is left from an earlier plan" in error
    assert "add --events to rewrite it" in error


def test_plan_seed_option_changes_hash(tmp_path, capsys):
    main(["plan", "minimal", "--out", str(tmp_path / "a")])
    main(["plan", "minimal", "--seed", "8", "--out", str(tmp_path / "b")])
    first = json.loads((tmp_path / "a" / "summary.json").read_text())
    second = json.loads((tmp_path / "b" / "summary.json").read_text())

    assert first["seed"] == 7
    assert second["seed"] == 8
    assert first["plan_hash"] != second["plan_hash"]


def test_plan_set_option_applies(capsys):
    status = main(["plan", "minimal", "--set", "population.platforms={ios: 1.0, android: 0.0}"])
    output = capsys.readouterr().out

    assert status == 0
    assert "devices ios" in output
    assert "android 0," not in output.split("devices", 1)[1].split("\n", 1)[0]


def test_plan_writes_truth_ledger(tmp_path, capsys):
    status = main(["plan", "minimal", "--out", str(tmp_path), "--truth"])

    assert status == 0
    assert (tmp_path / "truth.jsonl.gz").stat().st_size > 0


def test_plan_rejects_bad_shard(capsys):
    status = main(["plan", "minimal", "--shard", "2/2"])
    error = capsys.readouterr().err

    assert status == 2
    assert "invalid shard '2/2'" in error


def test_plan_events_need_out(capsys):
    status = main(["plan", "minimal", "--events"])
    error = capsys.readouterr().err

    assert status == 2
    assert "--out DIR" in error


def test_plan_rejects_bad_scenario_value(capsys):
    try:
        main(["plan", "minimal", "--set", "permission.opt_in.ios=1.5"])
    except SystemExit as exit_:
        status = exit_.code
    error = capsys.readouterr().err

    assert status == 2
    assert "permission.opt_in.ios" in error


def test_plan_reports_missing_file(capsys, tmp_path):
    try:
        main(["plan", str(tmp_path / "nope.yaml")])
    except SystemExit as exit_:
        status = exit_.code
    error = capsys.readouterr().err

    assert status == 2
    assert "not found" in error


def test_event_lines_are_canonical_json(tmp_path, capsys):
    main(["plan", "minimal", "--out", str(tmp_path), "--events"])
    lines = (tmp_path / "events.jsonl").read_text(encoding="utf-8").splitlines()

    assert len(lines) > 1000
    for line in lines:
        assert encode(json.loads(line)) == line


def test_plan_rejects_file_as_out(tmp_path, capsys):
    target = tmp_path / "summary.json"
    target.write_text("{}")
    status = main(["plan", "minimal", "--out", str(target)])
    error = capsys.readouterr().err

    assert status == 2
    assert "is a file" in error
