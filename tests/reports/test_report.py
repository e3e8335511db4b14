"""The report folder, the HTML summary, run comparison and the report and compare commands."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3

import numpy as np

from reports.build import build_report
from reports.compare import compare_runs, load_summary
from sim.cli import main
from sim.gates import GATE_METRICS
from sim.oracle.outcomes import OUTCOMES
from sim.oracle.stats import summarise
from tests.oracle.ledgers import SCENARIO, Story, apns_token, write_run_dir

SUMMARY_KEYS = {
    "summary_version", "scenario", "clock", "passed", "gates_passed", "no_push_warning", "gates",
    "metrics",
    "journeys", "problems", "trigger_lateness", "backend_conduct", "generator", "reach", "series",
    "push_requests", "unattributed_pushes", "unknown_token_pushes", "partial", "partial_reason",
    "backend_load", "sdk_errors", "backend", "ungated_problems_warning",
    "wrong_environment_warning", "failures_by_fault",
}  # fmt: skip


def test_report_folder_contents(good_run):
    html = build_report(good_run)
    folder = html.parent
    for name in ("report.html", "summary.json", "triggers.csv", "outcomes.csv",
                 "waterfall.csv", "problems.csv", "gates.csv", "metrics.csv", "series.csv",
                 "reach.csv", "status_mix.csv", "conduct.csv", "waterfall_per_journey.png",
                 "trigger_lateness.png"):  # fmt: skip
        assert (folder / name).exists(), name


def test_html_is_self_contained(good_run):
    text = build_report(good_run).read_text(encoding="utf-8")
    images = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(images) >= 6
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "<script" not in text
    assert "http://" not in text
    assert "https://" not in text


def test_html_summary_states_gates_in_words(good_run):
    text = build_report(good_run).read_text(encoding="utf-8")
    assert "NO GATES" in text or "GATES PASSED" in text
    assert "GENERATOR FELL BEHIND" not in text


def test_html_lists_every_metric(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(1000.0)
    story.push(2800.0, token)
    inputs, run_dir = write_run_dir(story, tmp_path, SCENARIO)
    shutil.copy(inputs.truth_paths[0], run_dir / "truth-0.jsonl")
    text = build_report(run_dir).read_text(encoding="utf-8")

    section = text.split("<h2>Metrics</h2>", 1)[1].split("<h2>", 1)[0]
    for name in GATE_METRICS:
        assert f"<code>{name}</code>" in section

    def row(metric: str) -> str:
        return section.split(f"<code>{metric}</code>", 1)[1].split("</tr>", 1)[0]

    # The scenario gates wrong_person_pushes, which is 0, and not duplicate_deliveries.
    assert '<td class="n">0</td>' in row("wrong_person_pushes")
    assert "<td>yes</td>" in row("wrong_person_pushes")
    assert "<td>yes</td>" not in row("duplicate_deliveries")


def test_summary_keys_stable(good_run):
    html = build_report(good_run)
    summary = json.loads((html.parent / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    journey = summary["journeys"][0]
    assert list(journey["outcomes"]) == list(OUTCOMES)
    assert sum(journey["outcomes"].values()) == journey["eligible"]


def test_partial_run_is_marked(tmp_path, good_run):
    # A copy, because good_run is shared by the module's tests.
    partial = tmp_path / "partial"
    shutil.copytree(good_run, partial)
    (partial / "run-status.json").write_text(
        json.dumps({"partial": True, "reason": "interrupted by the user"})
    )
    html = build_report(partial)
    summary = json.loads((html.parent / "summary.json").read_text())
    assert summary["partial"] is True
    assert summary["partial_reason"] == "interrupted by the user"
    reached = summary["clock"]["reached_s"]
    assert 0 < reached <= summary["clock"]["duration_s"]
    assert "PARTIAL RUN: interrupted by the user" in html.read_text()
    assert f"The model reached {reached / 3600:.1f} of" in html.read_text()
    assert load_summary(good_run)["clock"]["reached_s"] is None


LOCUST_STATS = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,"
    "80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
    "PUT,identify,94,2,3,4.1,0.8,41.5,2.0,4.18,0.09,3,4,4,5,6,9,12,17,41,41,41\n"
    "POST,push:opened,0,0,0,0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A\n"
    ",Aggregated,94,2,3,4.1,0.8,41.5,2.0,4.18,0.09,3,4,4,5,6,9,12,17,41,41,41\n"
)


def test_backend_load_from_locust_stats(tmp_path, good_run):
    loaded = tmp_path / "loaded"
    shutil.copytree(good_run, loaded)
    (loaded / "locust_stats.csv").write_text(LOCUST_STATS)

    html = build_report(loaded)
    load = json.loads((html.parent / "summary.json").read_text())["backend_load"]
    text = html.read_text()

    assert [row["name"] for row in load] == ["identify", "push:opened", "Aggregated"]
    assert load[0] == {
        "method": "PUT", "name": "identify", "requests": 94, "failures": 2,
        "requests_per_s": 4.18, "p50_ms": 3.0, "p95_ms": 9.0, "p99_ms": 17.0, "max_ms": 41.5,
    }  # fmt: skip
    assert load[1]["p99_ms"] is None
    assert "<h2>Backend load</h2>" in text
    assert "PUT identify" in text


def test_report_command_prints_backend_load(tmp_path, good_run, capsys):
    loaded = tmp_path / "loaded"
    shutil.copytree(good_run, loaded)
    (loaded / "locust_stats.csv").write_text(LOCUST_STATS)

    capsys.readouterr()
    main(["report", str(loaded)])
    output = capsys.readouterr().out

    assert (
        "backend load: 94 requests for the SDK calls, counting retries, batches and device "
        "tokens held until identify, at 4.2 req/s, 2 failed; response time p50 3 ms, p95 9 ms, "
        "p99 17 ms"
    ) in output
    assert "ended early" not in output

    capsys.readouterr()
    main(["report", str(good_run)])
    assert (
        "backend load: not recorded, because the run directory has no locust_stats.csv; run "
        "Locust with --csv RUN_DIR/locust to record it"
    ) in capsys.readouterr().out

    (loaded / "run-status.json").write_text(
        json.dumps({"partial": True, "reason": "interrupted by the user"})
    )
    main(["report", str(loaded)])
    assert "Locust's figures stop at its last statistics write" in capsys.readouterr().out


def test_backend_load_absent_without_locust(good_run):
    html = build_report(good_run)
    summary = json.loads((html.parent / "summary.json").read_text())

    assert summary["backend_load"] is None
    assert "No Locust statistics" in html.read_text()


def test_conduct_csv_one_number_per_row(good_run):
    build_report(good_run)
    with (good_run / "report" / "conduct.csv").open(newline="") as handle:
        rows = {row["figure"]: row["value"] for row in csv.DictReader(handle)}
    summary = json.loads((good_run / "report" / "summary.json").read_text())
    for service, count in summary["backend_conduct"]["connections"].items():
        assert int(rows[f"connections.{service}"]) == count
    assert "connections" not in rows
    assert int(rows["retries"]) == summary["backend_conduct"]["retries"]


def test_trigger_csv_one_row_per_trigger(good_run):
    html = build_report(good_run)
    summary = json.loads((html.parent / "summary.json").read_text())
    with open(html.parent / "triggers.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == summary["journeys"][0]["triggers"]
    assert {"trigger_id", "outcome", "lateness_s", "lateness_wall_ms"} <= set(rows[0])


def test_generator_banner_when_behind(tmp_path, good_run):
    run_dir = tmp_path / "behind"
    shutil.copytree(good_run, run_dir)
    truth = run_dir / "truth-0.jsonl"
    lines = truth.read_text().splitlines()
    dropped = 0
    for i, line in enumerate(lines):
        if '"kind":"sdk_call"' in line and '"event":"product_viewed"' in line and dropped < 200:
            lines[i] = line.replace('"status":"planned"', '"status":"dropped"')
            dropped += 1
    truth.write_text("\n".join(lines) + "\n")
    text = build_report(run_dir).read_text(encoding="utf-8")
    assert "GENERATOR FELL BEHIND" in text
    assert text.index("GENERATOR FELL BEHIND") < text.index("<h1>")


def test_rejected_sdk_calls_reported(tmp_path, good_run, capsys):
    run_dir = tmp_path / "rejected"
    shutil.copytree(good_run, run_dir)
    shutil.rmtree(run_dir / "report", ignore_errors=True)
    truth = run_dir / "truth-0.jsonl"
    lines = truth.read_text().splitlines()
    rejected = 0
    for i, line in enumerate(lines):
        if '"status":"planned"' in line:
            # Every call went out and got a 404, as from a service that is no push backend.
            lines[i] = (
                line.replace('"status":"planned"', '"status":"sent"')[:-1] + ',"http_status":404}'
            )
            rejected += 1
    truth.write_text("\n".join(lines) + "\n")
    scenario = run_dir / "scenario.yaml"
    scenario.write_text(
        re.sub(r"(?m)^gates:.*$", "gates:\n  - sdk_error_rate <= 0.01", scenario.read_text())
    )
    capsys.readouterr()

    assert main(["report", str(run_dir)]) == 1

    output = capsys.readouterr().out
    assert (
        f"SDK calls: {rejected:,} sent, {rejected:,} failed (100.0%) by response: 404: {rejected:,}"
        in output
    )
    assert "FAIL  sdk_error_rate <= 0.01  (value 1, threshold 0.01)" in output
    assert (
        "the backend has no such route: check that --target (or Locust's --host) is the "
    ) in output
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["metrics"]["sdk_error_rate"] == 1.0
    assert summary["sdk_errors"]["failed_responses"] == {"404": rejected}
    html = (run_dir / "report" / "report.html").read_text(encoding="utf-8")
    assert "BACKEND DID NOT ACCEPT SDK CALLS" in html
    assert f"404: {rejected:,}" in html


def test_virtual_run_has_no_sdk_banner(good_run):
    text = build_report(good_run).read_text(encoding="utf-8")
    assert "BACKEND DID NOT ACCEPT SDK CALLS" not in text
    assert "No SDK call was sent" in text


def test_locust_latency_figure_optional(tmp_path, good_run):
    run_dir = tmp_path / "locust"
    shutil.copytree(good_run, run_dir)
    header = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%"
    rows = [f"{1800000000 + i},10,,Aggregated,5,0,{20 + i},30,35,40,50,60,70,{80 + i}"
            for i in range(5)]  # fmt: skip
    (run_dir / "locust_stats_history.csv").write_text("\n".join([header, *rows]) + "\n")
    html = build_report(run_dir)
    assert (html.parent / "backend_latency_percentiles.png").exists()
    assert not (build_report(good_run).parent / "backend_latency_percentiles.png").exists()


def test_compare_flags_worse(good_run, flawed_run):
    text = compare_runs(good_run, flawed_run).text
    delivery = next(line for line in text.splitlines() if line.startswith("delivery_rate"))
    assert "WORSE" in delivery
    wrong = next(line for line in text.splitlines() if line.startswith("wrong_person_pushes"))
    assert "WORSE" not in wrong
    assert "figure(s) worse in B" in text


def test_compare_flags_grown_failure_outcomes(good_run, flawed_run):
    lines = compare_runs(good_run, flawed_run).text.splitlines()
    outcome = {line.split()[0]: line for line in lines if line.startswith("  cart_recovery.")}
    assert outcome["cart_recovery.not_sent"].endswith("WORSE")
    assert outcome["cart_recovery.sent_late"].endswith("WORSE")
    # Fewer pushes shown is a delivery figure, flagged by delivery_rate, not per outcome.
    assert not outcome["cart_recovery.displayed"].endswith("WORSE")
    reverse = compare_runs(flawed_run, good_run)
    assert reverse.worse_figures == 0
    outcome = {line.split()[0]: line for line in reverse.text.splitlines()
               if line.startswith("  cart_recovery.")}  # fmt: skip
    assert outcome["cart_recovery.not_sent"].endswith("BETTER")
    assert not outcome["cart_recovery.displayed"].endswith("BETTER")


def test_compare_flags_better(good_run, flawed_run):
    comparison = compare_runs(flawed_run, good_run)
    rows = {line.split()[0]: line for line in comparison.text.splitlines() if line}

    assert rows["delivery_rate"].endswith("BETTER")
    assert rows["retries_without_backoff"].endswith("BETTER")
    # 0.21 against 0.31 of 95 triggers is a move chance explains.
    assert rows["conversion_rate"].endswith("better, within noise")
    # delivery_rate with failure_rate, retries_without_backoff and two failure outcomes.
    assert comparison.better_figures == 4
    assert (
        "nothing worse in B; 4 figure(s) better in B (3 more better within noise, not counted)\n"
    ) in comparison.text
    # The run with few lateness samples gives its p99s no noise test, so they are named apart.
    assert comparison.text.endswith(
        "moved the right way with no noise test, not counted: trigger_lateness_p99, "
        "trigger_lateness_p99_wall_ms"
    )
    assert compare_runs(good_run, flawed_run).better_figures == 0


def _with_gate(tmp_path, run, name, gate, passed):
    """Copy ``run`` with ``gate`` added to its summary.json as judged ``passed``."""
    copy = tmp_path / name
    shutil.copytree(run, copy)
    build_report(copy)
    path = copy / "report" / "summary.json"
    summary = json.loads(path.read_text())
    metric = gate.split()[0]
    summary["gates"].append({
        "gate": gate, "metric": metric, "op": "==", "threshold": 0.0,
        "value": summary["metrics"][metric], "passed": passed, "note": "",
    })  # fmt: skip
    path.write_text(json.dumps(summary))
    return copy


def test_compare_counts_gate_and_its_metric_once(tmp_path, good_run, flawed_run):
    gate = "retries_without_backoff == 0"
    baseline = _with_gate(tmp_path, good_run, "a", gate, True)
    candidate = _with_gate(tmp_path, flawed_run, "b", gate, False)

    without_gate = compare_runs(good_run, flawed_run)
    comparison = compare_runs(baseline, candidate)
    gate_row = next(line for line in comparison.text.splitlines() if gate in line)

    assert gate_row.split()[-3:] == ["pass", "FAIL", "WORSE"]
    assert comparison.failed_gates == (gate,)
    # The failed gate and the WORSE metric it reads make one figure.
    assert comparison.worse_figures == without_gate.worse_figures
    back = compare_runs(candidate, baseline)
    assert back.better_figures == compare_runs(flawed_run, good_run).better_figures
    assert next(line for line in back.text.splitlines() if gate in line).endswith("BETTER")


def test_compare_same_run_nothing_worse(good_run):
    comparison = compare_runs(good_run, good_run)
    assert comparison.text.endswith("nothing worse in B")
    assert comparison.failed_gates == ()
    assert comparison.same_scenario
    assert "different scenario" not in comparison.text


def test_compare_missing_value_is_not_comparable(tmp_path, good_run):
    without = tmp_path / "without"
    shutil.copytree(good_run, without)
    build_report(without)
    summary_path = without / "report" / "summary.json"
    summary = json.loads(summary_path.read_text())
    assert summary["metrics"]["delivery_rate"] is not None
    summary["metrics"]["delivery_rate"] = None
    summary_path.write_text(json.dumps(summary))

    comparison = compare_runs(good_run, without)

    delivery = next(line for line in comparison.text.splitlines()
                    if line.startswith("delivery_rate"))  # fmt: skip
    assert delivery.split()[2:] == ["n/a", "not", "comparable"]
    assert comparison.worse_figures == 0
    assert comparison.text.endswith("nothing worse in B")


def test_naive_switches_named_in_report(tmp_path, good_run):
    naive = tmp_path / "naive"
    shutil.copytree(good_run, naive)
    status = {"partial": False, "reason": None, "backend": "reference", "naive": ["no_exit_check"]}
    (naive / "run-status.json").write_text(json.dumps(status))

    html = build_report(naive).read_text(encoding="utf-8")
    summary = json.loads((naive / "report" / "summary.json").read_text())
    text = compare_runs(good_run, naive).text

    assert summary["backend"] == {"backend": "reference", "naive": ["no_exit_check"]}
    assert "the reference backend with naive switch no_exit_check" in html
    # good_run has no run-status.json, so its backend is unrecorded.
    assert ("note: the backends under test differ: A ran an unrecorded backend, B ran the "
            "reference backend with naive switch no_exit_check") in text  # fmt: skip


def test_own_backend_named_in_report(tmp_path, good_run):
    own = tmp_path / "own"
    shutil.copytree(good_run, own)
    status = {"partial": False, "reason": None, "backend": "http://127.0.0.1:9000", "naive": []}
    (own / "run-status.json").write_text(json.dumps(status))

    html = build_report(own).read_text(encoding="utf-8")

    assert "Backend under test: <b>your backend at http://127.0.0.1:9000</b>" in html


def test_compare_notes_partial_run(tmp_path, good_run):
    partial = tmp_path / "partial"
    shutil.copytree(good_run, partial)
    (partial / "run-status.json").write_text(
        json.dumps({"partial": True, "reason": "interrupted by the user"})
    )
    build_report(partial)

    text = compare_runs(good_run, partial).text

    assert "note: run B is partial (interrupted by the user)" in text
    assert "note: run A is partial" not in text


def test_compare_notes_other_scenario(tmp_path, good_run):
    other = tmp_path / "other"
    shutil.copytree(good_run, other)
    scenario = other / "scenario.yaml"
    text = scenario.read_text()
    assert "logout: 0.03\n" in text
    scenario.write_text(text.replace("logout: 0.03\n", "logout: 0.2\n"))

    comparison = compare_runs(good_run, other)

    assert not comparison.same_scenario
    assert "note: the scenarios differ in identity.logout" in comparison.text


def test_compare_reads_scenarios_as_resolved(tmp_path, good_run):
    # A comment and the older "35s" spelling of a price change the file but not the scenario.
    older = tmp_path / "older"
    shutil.copytree(good_run, older)
    scenario = older / "scenario.yaml"
    text = scenario.read_text()
    assert "median: 35.0\n" in text
    text = text.replace("median: 35.0\n", "median: 35s\n", 1)
    scenario.write_text(text + "\n# written before prices were numbers\n")

    comparison = compare_runs(good_run, older)

    assert comparison.same_scenario
    assert "note: the scenarios differ" not in comparison.text


def test_report_command_exit_codes(tmp_path, good_run, capsys):
    assert main(["report", str(good_run)]) == 0

    failing = tmp_path / "failing"
    shutil.copytree(good_run, failing)
    scenario = failing / "scenario.yaml"
    text = scenario.read_text()
    text = re.sub(r"(?m)^gates:.*$", "gates:\n  - delivery_rate < 1\n  - "
                  "wrong_person_pushes == 0", text)  # fmt: skip
    scenario.write_text(text)
    capsys.readouterr()
    assert main(["report", str(failing)]) == 1
    output = capsys.readouterr()
    assert "FAIL  delivery_rate < 1  (value 1, threshold 1)" in output.out
    assert "pass  wrong_person_pushes == 0" in output.out
    assert output.out.endswith("1 of 2 gate(s) failed\n")

    passing = tmp_path / "passing"
    shutil.copytree(failing, passing)
    scenario = passing / "scenario.yaml"
    scenario.write_text(scenario.read_text().replace("delivery_rate < 1", "delivery_rate >= 0.5"))
    assert main(["report", str(passing)]) == 0
    assert capsys.readouterr().out.endswith("all 2 gate(s) passed\n")


def test_report_warns_when_no_push_arrived(tmp_path, good_run, capsys):
    silent = tmp_path / "silent"
    shutil.copytree(good_run, silent)
    connection = sqlite3.connect(silent / "deliveries.sqlite")
    connection.execute("DELETE FROM deliveries")
    connection.commit()
    connection.close()

    capsys.readouterr()
    good_status = main(["report", str(good_run)])
    quiet = capsys.readouterr().out
    silent_status = main(["report", str(silent)])
    warned = capsys.readouterr().out

    assert good_status == 0
    assert "no push request reached the gateways" not in quiet
    # The gates on bad pushes pass with nothing sent, so the verdict itself fails the run.
    assert silent_status == 1
    assert "no push request reached the gateways, although" in warned
    assert "check that the backend sends to the gateways" in warned
    assert "the run fails: no push request reached the gateways (see above)" in warned
    html = (silent / "report" / "report.html").read_text(encoding="utf-8")
    assert "NO PUSHES: no push request reached the gateways" in html
    assert "RUN FAILED: no push reached the gateways" in html
    assert "NO PUSHES" not in (good_run / "report" / "report.html").read_text(encoding="utf-8")
    summaries = [
        json.loads((run / "report" / "summary.json").read_text()) for run in (good_run, silent)
    ]
    assert [summary["passed"] for summary in summaries] == [True, False]
    assert [summary["gates_passed"] for summary in summaries] == [True, True]
    assert summaries[0]["no_push_warning"] is None
    assert summaries[1]["no_push_warning"].startswith("no push request reached the gateways")

    # compare counts the run without pushes as failing a check of its own, and exits 1.
    comparison = compare_runs(good_run, silent)
    assert _line(comparison.text, "  a push reached the gateways").endswith("pass  FAIL  WORSE")
    assert comparison.failed_gates == ("a push reached the gateways",)
    assert main(["compare", str(good_run), str(silent)]) == 1


def test_compare_prunes_unchecked_not_zero(tmp_path, good_run):
    def unchecked(summary):
        summary["backend_conduct"]["pruning_checked"] = False
        summary["backend_conduct"]["prunes_after_unregistered"] = 0

    text = compare_runs(good_run, _edited_copy(tmp_path, good_run, "own", unchecked)).text

    assert _line(text, "  prunes_after_unregistered").split()[-1] == "n/a"


def test_report_warns_when_most_triggers_excluded(tmp_path, good_run, capsys):
    late = tmp_path / "late"
    shutil.copytree(good_run, late)
    scenario = late / "scenario.yaml"
    text = scenario.read_text().replace("drain: 1h", "drain: 20h")
    scenario.write_text(text.replace("gates: []", "gates: ['wrong_person_pushes == 0']"))

    capsys.readouterr()
    main(["report", str(good_run)])
    quiet = capsys.readouterr().out
    main(["report", str(late)])
    output = capsys.readouterr()
    warned = output.out

    assert "not judged" not in quiet
    assert "warning: journey cart_recovery:" in warned
    assert "were due within clock.drain of the end and were not judged" in warned
    assert output.out.endswith(
        "gate(s) passed, but journey(s) cart_recovery were mostly not judged (see above)\n"
    )
    html = (late / "report" / "report.html").read_text(encoding="utf-8")
    assert "NOT JUDGED: journey cart_recovery:" in html
    assert "NOT JUDGED" not in (good_run / "report" / "report.html").read_text(encoding="utf-8")

    # An interrupted run excludes what was due after it stopped; a longer duration is no fix.
    (late / "run-status.json").write_text(
        json.dumps({"partial": True, "reason": "interrupted by the user", "backend": "reference",
                    "naive": []})
    )  # fmt: skip
    main(["report", str(late)])
    partial = capsys.readouterr().out
    assert "not judged; the run ended early, and a whole run judges them" in partial
    assert "longer clock.duration" not in partial


def test_report_command_missing_run(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["report", str(missing)]) == 2
    assert f"cannot judge {missing}: no such run directory" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "scenario.yaml not found" in capsys.readouterr().err


def test_report_command_given_a_file(tmp_path, capsys):
    config = tmp_path / "gateways.json"
    config.write_text("{}")

    assert main(["report", str(config)]) == 2
    assert f"cannot judge {config}: it is a file; give the directory" in capsys.readouterr().err


def test_report_command_given_report_folder(good_run, capsys):
    assert main(["report", str(good_run / "report")]) == 2
    assert f"its parent has: give {good_run} instead" in capsys.readouterr().err


def test_report_command_given_runs_folder(tmp_path, good_run, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(good_run, runs / "first")

    assert main(["report", str(runs)]) == 2
    assert (
        f"cannot judge {runs}: it contains runs rather than being one: give one of {runs / 'first'}"
    ) in capsys.readouterr().err


def test_compare_command_missing_run(tmp_path, good_run, capsys):
    missing = tmp_path / "nowhere"
    assert main(["compare", str(good_run), str(missing)]) == 2
    assert f"cannot compare {missing}: no such run directory" in capsys.readouterr().err


def test_compare_command(good_run, flawed_run, capsys):
    failed = compare_runs(good_run, flawed_run).failed_gates
    expected = 1 if failed else 0
    assert main(["compare", str(good_run), str(flawed_run)]) == expected
    assert "WORSE" in capsys.readouterr().out


def test_compare_fail_on_worse(good_run, flawed_run, capsys):
    comparison = compare_runs(good_run, flawed_run)
    assert comparison.failed_gates == ()
    assert comparison.worse_figures > 0

    plain = main(["compare", str(good_run), str(flawed_run)])
    strict = main(["compare", str(good_run), str(flawed_run), "--fail-on-worse"])
    same = main(["compare", str(good_run), str(good_run), "--fail-on-worse"])

    assert (plain, strict, same) == (0, 1, 0)
    assert "figure(s) worse in B (--fail-on-worse)" in capsys.readouterr().err


def test_compare_command_gate_newly_failed(tmp_path, good_run, flawed_run, capsys):
    rates = [load_summary(run)["metrics"]["delivery_rate"] for run in (good_run, flawed_run)]
    assert rates[0] > rates[1]
    gate = f"delivery_rate >= {(rates[0] + rates[1]) / 2:.6f}"
    copies = []
    for name, run in (("good", good_run), ("flawed", flawed_run)):
        copy = tmp_path / name
        shutil.copytree(run, copy)
        shutil.rmtree(copy / "report", ignore_errors=True)
        scenario = copy / "scenario.yaml"
        scenario.write_text(re.sub(r"(?m)^gates:.*$", f"gates:\n  - {gate}", scenario.read_text()))
        copies.append(copy)
    capsys.readouterr()

    assert main(["compare", str(copies[0]), str(copies[1])]) == 1
    assert f"gates that pass in A and fail in B: {gate}" in capsys.readouterr().out
    assert main(["compare", str(copies[1]), str(copies[0])]) == 0


def test_report_counts_unattributed_pushes(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(1000.0)
    story.push(2800.0, token, cart="c9-9")
    inputs, run_dir = write_run_dir(story, tmp_path, SCENARIO)
    shutil.copy(inputs.truth_paths[0], run_dir / "truth-0.jsonl")
    html = build_report(run_dir).read_text(encoding="utf-8")
    assert "pushes tied to no trigger" in html
    assert "never issued" not in html


def test_report_names_pushes_to_unknown_tokens(tmp_path, capsys):
    story = Story()
    token = story.shopper()
    story.add_to_cart(1000.0)
    story.push(2800.0, token)
    # An earlier run's device token that a backend kept in its store.
    story.push(2900.0, apns_token(999), cart="c9-9")
    inputs, run_dir = write_run_dir(story, tmp_path, SCENARIO)
    shutil.copy(inputs.truth_paths[0], run_dir / "truth-0.jsonl")

    html = build_report(run_dir).read_text(encoding="utf-8")
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    main(["report", str(run_dir)])
    output = capsys.readouterr().out

    assert summary["unknown_token_pushes"] == 1
    assert summary["unattributed_pushes"] == 1
    assert "2 push requests,\n1 not tied to any trigger, 1 to device tokens this run never" in html
    assert "pushes to device tokens this run never issued" in html
    assert ("note: 1 of 2 push requests went to device tokens that no shopper of this run ever "
            "held") in output  # fmt: skip


def test_report_command_counts_local_calls(tmp_path, capsys):
    story = Story()
    story.shopper()
    story.add_to_cart(1000.0)
    # A logout under the Track API: the app clears its identity and sends nothing.
    story.call("clear_identity", 1200.0, "d1-0", "p1-0", user_id="p1-0", status="local")
    inputs, run_dir = write_run_dir(story, tmp_path, SCENARIO)
    shutil.copy(inputs.truth_paths[0], run_dir / "truth-0.jsonl")

    main(["report", str(run_dir)])
    output = capsys.readouterr().out

    assert "SDK calls: 3 sent, none failed\n  (1 more SDK calls made no request: a logout" in output


def _edited_copy(tmp_path, run_dir, name, edit):
    """Copy ``run_dir``, build its summary and apply ``edit`` to the summary dict."""
    copy = tmp_path / name
    shutil.copytree(run_dir, copy)
    build_report(copy)
    path = copy / "report" / "summary.json"
    summary = json.loads(path.read_text())
    edit(summary)
    path.write_text(json.dumps(summary))
    return copy


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_compare_count_change_within_noise(tmp_path, good_run):
    def one_more(summary):
        summary["metrics"]["wrong_person_pushes"] += 1

    def four_more(summary):
        summary["metrics"]["wrong_person_pushes"] += 4

    def six_more(summary):
        summary["metrics"]["wrong_person_pushes"] += 6

    assert load_summary(good_run)["metrics"]["wrong_person_pushes"] == 0
    small = compare_runs(good_run, _edited_copy(tmp_path, good_run, "one", one_more))
    four = compare_runs(good_run, _edited_copy(tmp_path, good_run, "four", four_more))
    large = compare_runs(good_run, _edited_copy(tmp_path, good_run, "six", six_more))

    # Given a sum of n, chance puts all n in B with probability 2^-n: 1/2 for one, 1/16 for
    # four (z 1.53) and 1/64 for six (z 2.15).
    assert _line(small.text, "wrong_person_pushes").endswith("worse, within noise")
    assert small.worse_figures == 0
    assert small.text.endswith("nothing worse in B (1 more worse within noise, not counted)")
    assert _line(four.text, "wrong_person_pushes").endswith("worse, within noise")
    assert four.worse_figures == 0
    assert _line(large.text, "wrong_person_pushes").endswith("WORSE")
    assert large.worse_figures == 1


def test_compare_share_change_within_noise(tmp_path, good_run):
    def one_not_sent(summary):
        journey = summary["journeys"][0]
        journey["outcomes"]["displayed"] -= 1
        journey["outcomes"]["not_sent"] += 1
        summary["metrics"]["delivery_rate"] -= 0.001
        summary["metrics"]["failure_rate"] += 0.001

    journey = load_summary(good_run)["journeys"][0]
    assert journey["outcomes"]["not_sent"] == 0
    assert journey["eligible"] > 100
    text = compare_runs(good_run, _edited_copy(tmp_path, good_run, "b", one_not_sent)).text

    assert _line(text, "delivery_rate").endswith("worse, within noise")
    assert _line(text, "failure_rate").endswith("worse, within noise")
    assert _line(text, f"  {journey['name']}.not_sent").endswith("worse, within noise")
    # delivery_rate and failure_rate add up to 1, so they count as one figure.
    assert text.endswith("nothing worse in B (2 more worse within noise, not counted)")


def _lateness(seed: int, scale: float = 1.0, count: int = 2_000) -> dict:
    """Return trigger_lateness.sim_s as the oracle writes it, for lognormal lateness in s."""
    # A p99 near 9 simulated seconds, like a backend that sends most pushes within seconds.
    samples = np.random.default_rng(seed).lognormal(1.0, 0.5, size=count) * scale
    return summarise(list(samples), intervals=(99,))


def _with_lateness(lateness: dict):
    """Return an edit that puts ``lateness`` in a summary as trigger_lateness.sim_s."""

    def edit(summary):
        summary["trigger_lateness"]["sim_s"] = lateness
        summary["metrics"]["trigger_lateness_p99"] = lateness["p99"]

    return edit


def _compare_lateness(tmp_path, run_dir, before: dict, after: dict):
    """Compare two copies of ``run_dir`` whose trigger_lateness.sim_s are replaced."""
    a = _edited_copy(tmp_path, run_dir, "a", _with_lateness(before))
    b = _edited_copy(tmp_path, run_dir, "b", _with_lateness(after))
    return compare_runs(a, b)


def test_compare_lateness_p99_within_noise(tmp_path, good_run):
    # Two draws of one distribution: B's p99 is higher by chance alone.
    before, after = _lateness(seed=5), _lateness(seed=6)
    assert after["p99"] > before["p99"]

    comparison = _compare_lateness(tmp_path, good_run, before, after)

    assert _line(comparison.text, "trigger_lateness_p99 ").endswith("worse, within noise")
    assert comparison.worse_figures == 0
    assert comparison.text.endswith("nothing worse in B (1 more worse within noise, not counted)")
    assert "got no noise test" not in comparison.text


def test_compare_lateness_p99_beyond_noise(tmp_path, good_run):
    # B's lateness is 20% longer throughout, so its p99 moves about 3 standard errors.
    before, after = _lateness(seed=5), _lateness(seed=6, scale=1.2)

    comparison = _compare_lateness(tmp_path, good_run, before, after)

    assert _line(comparison.text, "trigger_lateness_p99 ").endswith("WORSE")
    assert comparison.worse_figures == 1
    assert comparison.text.endswith("1 figure(s) worse in B")


def test_compare_lateness_p99_older_summaries(tmp_path, good_run):
    before, after = _lateness(seed=5), _lateness(seed=6)
    old_before = {key: value for key, value in before.items() if key != "p99_interval"}
    old_after = {key: value for key, value in after.items() if key != "p99_interval"}
    new_a = _edited_copy(tmp_path, good_run, "new_a", _with_lateness(before))
    old_a = _edited_copy(tmp_path, good_run, "old_a", _with_lateness(old_before))
    old_b = _edited_copy(tmp_path, good_run, "old_b", _with_lateness(old_after))

    # Neither summary has intervals: a rise has no noise test, so it is named but not counted.
    neither = compare_runs(old_a, old_b).text
    assert _line(neither, "trigger_lateness_p99 ").endswith("worse, no noise test")
    assert "no noise test, not counted: trigger_lateness_p99 (runs with more shoppers" in neither
    assert (
        "note: run A's summary.json predates the percentile confidence intervals, so "
        f"trigger_lateness_p99 got no noise test; `pushsim report {old_a}` adds them"
    ) in neither

    # One interval: the older run's value counts as exact against the newer run's interval.
    one = compare_runs(new_a, old_b).text
    assert "the noise test of trigger_lateness_p99 used run A's interval alone" in one
    assert f"`pushsim report {old_b}` adds them" in one
    assert "note: run A's summary.json predates" not in one


def test_compare_value_against_interval(tmp_path, good_run):
    after = _lateness(seed=6)
    lower = after["p99_interval"]["lower"]

    def old_with_p99(p99):
        def edit(summary):
            summary["trigger_lateness"]["sim_s"] = {"count": 2_000, "p99": p99}
            summary["metrics"]["trigger_lateness_p99"] = p99

        return edit

    b = _edited_copy(tmp_path, good_run, "b", _with_lateness(after))
    # B's lower side spans 2 standard errors, so halfway to its lower bound is 1 of them.
    near = _edited_copy(tmp_path, good_run, "near", old_with_p99((after["p99"] + lower) / 2))
    far = _edited_copy(tmp_path, good_run, "far", old_with_p99(lower - 1.0))

    assert _line(compare_runs(near, b).text, "trigger_lateness_p99 ").endswith(
        "worse, within noise"
    )
    assert _line(compare_runs(far, b).text, "trigger_lateness_p99 ").endswith("WORSE")


def test_compare_lateness_better_with_fewer_sent(tmp_path, good_run):
    # B's lateness is 20% shorter, but B sent no push for five more triggers.
    before, after = _lateness(seed=5, scale=1.2), _lateness(seed=6)

    def fewer_sent(summary):
        _with_lateness(after)(summary)
        journey = summary["journeys"][0]
        journey["outcomes"]["displayed"] -= 5
        journey["outcomes"]["not_sent"] += 5

    a = _edited_copy(tmp_path, good_run, "a", _with_lateness(before))
    comparison = compare_runs(a, _edited_copy(tmp_path, good_run, "b", fewer_sent))

    assert _line(comparison.text, "trigger_lateness_p99 ").endswith("better, but fewer sent")
    assert comparison.better_figures == 0
    assert (
        "better in B but not counted: trigger_lateness_p99, because B left a larger share of "
        "the triggers that expected a push not_sent"
    ) in comparison.text


def test_compare_notes_too_few_lateness_samples(good_run, flawed_run):
    a = load_summary(good_run)
    count = a["trigger_lateness"]["sim_s"]["count"]
    assert count < 377
    assert a["trigger_lateness"]["sim_s"]["p99_interval"]["upper"] is None

    text = compare_runs(good_run, flawed_run).text

    assert _line(text, "trigger_lateness_p99 ").endswith("worse, no noise test")
    assert (
        f"note: too few lateness samples (run A {count}) to bound the p99 from above "
        "(377 are needed), so trigger_lateness_p99 and trigger_lateness_p99_wall_ms got no "
        "noise test"
    ) in text
    # A move the right way is not tested either, and the note gives the reason.
    reverse = compare_runs(flawed_run, good_run).text
    assert _line(reverse, "trigger_lateness_p99 ").endswith("better, no noise test")
    assert "moved the right way with no noise test, not counted: trigger_lateness_p99" in reverse
    assert f"note: too few lateness samples (run B {count}) to bound the p99 from above" in reverse


def test_compare_notes_both_runs_short_of_samples_once(tmp_path, good_run):
    # The sim p99 rises from A to B and the wall p99 falls, so each move needs the upper bound
    # of another run.
    def later_wall(summary):
        summary["metrics"]["trigger_lateness_p99_wall_ms"] += 10.0

    def later_sim(summary):
        summary["metrics"]["trigger_lateness_p99"] += 10.0

    count = load_summary(good_run)["trigger_lateness"]["sim_s"]["count"]
    a = _edited_copy(tmp_path, good_run, "a", later_wall)
    text = compare_runs(a, _edited_copy(tmp_path, good_run, "b", later_sim)).text
    notes = [line for line in text.splitlines() if line.startswith("note: too few")]

    assert notes == [
        f"note: too few lateness samples (run A {count} and run B {count}) to bound the p99 "
        "from above (377 are needed), so trigger_lateness_p99 and "
        "trigger_lateness_p99_wall_ms got no noise test"
    ]


def test_compare_names_differing_scenario_keys(tmp_path, good_run):
    other = tmp_path / "other"
    shutil.copytree(good_run, other)
    scenario = other / "scenario.yaml"
    assert "drain: 1h" in scenario.read_text()
    scenario.write_text(scenario.read_text().replace("drain: 1h", "drain: 2h"))

    text = compare_runs(good_run, other).text

    assert "note: the scenarios differ in clock.drain, so a difference below may come" in text


def test_compare_names_seed_once(tmp_path, good_run):
    runs = []
    for name, seed in (("a", 11), ("b", 12)):
        run = tmp_path / name
        shutil.copytree(good_run, run)
        scenario = run / "scenario.yaml"
        scenario.write_text(scenario.read_text().replace("seed: 11", f"seed: {seed}"))
        epoch = json.loads((run / "epoch.json").read_text())
        (run / "epoch.json").write_text(json.dumps({**epoch, "seed": seed}))
        runs.append(run)

    text = compare_runs(*runs).text

    assert "note: the seeds differ (A 11, B 12), so a difference below may come" in text
    assert "differ in seed" not in text


def test_compare_notes_journey_barely_judged(tmp_path, good_run):
    def exclude_most(summary):
        journey = summary["journeys"][0]
        journey["excluded_near_end"] = journey["triggers"] - 1
        journey["eligible"] = 1

    name = load_summary(good_run)["journeys"][0]["name"]
    text = compare_runs(good_run, _edited_copy(tmp_path, good_run, "b", exclude_most)).text

    assert "note: run B judged 1 of" in text
    assert f"triggers of journey {name} (the rest were due within clock.drain" in text
    assert "note: run A judged" not in text


def test_compare_shows_backend_conduct(good_run, flawed_run):
    text = compare_runs(good_run, flawed_run).text
    a, b = load_summary(good_run), load_summary(flawed_run)

    assert "backend conduct (for context, not flagged)" in text
    pushes = _line(text, "  push_requests").split()
    assert pushes[1:] == [str(a["push_requests"]), str(b["push_requests"])]
    retries = _line(text, "  retries ").split()
    assert retries[1:] == [str(a["backend_conduct"]["retries"]),
                           str(b["backend_conduct"]["retries"])]  # fmt: skip


def test_compare_marks_moved_legitimate_outcome(tmp_path, good_run):
    def more_capped(summary):
        # A backend that pushes after conversions fills the frequency cap of later triggers.
        journey = summary["journeys"][0]
        journey["outcomes"]["capped"] = journey["outcomes"].get("capped", 0) + 30
        journey["outcomes"]["displayed"] -= 30

    name = load_summary(good_run)["journeys"][0]["name"]
    comparison = compare_runs(good_run, _edited_copy(tmp_path, good_run, "b", more_capped))

    assert _line(comparison.text, f"  {name}.capped").endswith("moved beyond noise")
    assert comparison.worse_figures == 0
    assert comparison.better_figures == 0


def test_compare_notes_generator_fell_behind(tmp_path, good_run):
    def behind(summary):
        summary["generator"].update(fell_behind=True, dropped=1234, drop_share=0.125)

    text = compare_runs(good_run, _edited_copy(tmp_path, good_run, "b", behind)).text

    assert "note: run B's driver dropped 1,234 SDK calls (12.5%), so its backend saw less" in text
    assert "note: run A's driver" not in text


def test_report_shows_ungated_problems(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(1000.0)
    story.order(1600.0)
    story.push(1000.0 + 1800.0, token)
    inputs, run_dir = write_run_dir(story, tmp_path)
    shutil.copy(inputs.truth_paths[0], run_dir / "truth-0.jsonl")

    html = build_report(run_dir).read_text(encoding="utf-8")
    summary = json.loads((run_dir / "report" / "summary.json").read_text())

    warning = summary["ungated_problems_warning"]
    assert warning.startswith("no gate checks these, and none is zero: pushes_after_conversion 1")
    assert "NOT GATED: no gate checks these, and none is zero: pushes_after_conversion 1" in html


def test_top_problems_lead_with_failed_gate(tmp_path):
    # Three carts get no push (not_sent) and one gets a push after its order, which the gate
    # fails on: the gate's problem leads although its count is the smaller.
    story = Story()
    token = story.shopper()
    for number in (1, 2, 3):
        story.add_to_cart(1000.0 * number, f"c1-{number}")
        story.abandon(1000.0 * number + 60, f"c1-{number}")
    story.add_to_cart(5000.0, "c1-4")
    story.order(5600.0, "c1-4")
    story.push(5000.0 + 1800.0, token, "c1-4")
    gated = SCENARIO.replace("gates:\n", "gates:\n  - pushes_after_conversion == 0\n")
    inputs, run_dir = write_run_dir(story, tmp_path, gated)
    shutil.copy(inputs.truth_paths[0], run_dir / "truth-0.jsonl")

    html = build_report(run_dir).read_text(encoding="utf-8")
    section = html[html.index("<h2>Top problems</h2>") :]
    rows = re.findall(r"<tr><td>([^<]*)</td><td class=\"n\">([^<]*)</td>", section)

    assert rows[0] == ("push after conversion (fails a gate)", "1")
    assert rows[1] == ("not sent", "3")
