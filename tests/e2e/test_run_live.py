"""The whole rehearsal through ``pushsim run``, on loopback, as a user runs it."""

from __future__ import annotations

import json
import time

import pytest

from sim.driver.wire import event_ulid
from tests.e2e.run_helpers import (
    epoch_of,
    interrupt,
    process_running,
    processes_mentioning,
    pushsim_run,
    query,
    start_pushsim_run,
    truth,
    wait_for_line,
)

SHORT = ("--set", "clock.duration=8h", "--set", "population.installs=700")

pytestmark = pytest.mark.slow


def test_two_workers_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    result = pushsim_run(run_dir, "minimal", "--processes", "2", *SHORT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    assert (run_dir / "truth-0.jsonl").exists()
    assert (run_dir / "truth-1.jsonl").exists()
    assert (run_dir / "report" / "report.html").exists()
    # Eight simulated hours at the time scale of 1440 are 20 wall seconds.
    plan = json.loads((run_dir / "plan-summary.json").read_text())
    calls = plan["sdk_calls"]["total"]
    assert f"plan: {calls:,} SDK calls over 20 wall seconds, {calls / 20:,.0f}/s" in result.stdout
    for name in ("scenario.yaml", "epoch.json", "plan.json", "locust.html", "locust_stats.csv"):
        assert (run_dir / name).exists(), name
    for log in ("gateways", "backend", "locust"):
        assert (run_dir / "logs" / f"{log}.log").exists()

    records = truth(run_dir)
    epoch = epoch_of(run_dir)
    backend = run_dir / "backend.sqlite"
    event_ids = {row[0] for row in query(backend, "SELECT dedupe_id FROM events")}
    customers = {row[0] for row in query(backend, "SELECT value FROM identities WHERE kind='id'")}
    tokens = {row[0] for row in query(backend, "SELECT token FROM devices")}

    sent = [r for r in records if r["kind"] == "sdk_call" and r["status"] == "sent"]
    assert len(sent) > 1000
    for call in sent:
        if call["method"] in ("track", "anonymous_track"):
            wall = epoch.wall_at(epoch.sim_t0 + call["at"])
            assert event_ulid(int(wall * 1000), call["group"], call["seq"]) in event_ids, call
        elif call["method"] == "identify":
            assert call["user_id"] in customers, call
        elif call["method"] == "register_token" and call["user_id"] is not None:
            assert call["token"] in tokens, call

    displayed = [r for r in records if r["kind"] == "reaction" and r["step"] == "displayed"]
    opened = {
        r["delivery_id"] for r in records if r["kind"] == "reaction" and r["step"] == "opened"
    }
    assert displayed, "no push reached a phone"
    assert opened, "no push was opened"
    metrics = query(backend, "SELECT delivery_id, metric FROM delivery_metrics")
    assert opened <= {delivery for delivery, metric in metrics if metric == "opened"}
    assert {delivery for delivery, metric in metrics if metric == "delivered"}


def test_no_exit_check_fails_gate(tmp_path):
    run_dir = tmp_path / "run"
    result = pushsim_run(
        run_dir, "cart_recovery", "--naive", "no_exit_check", "--set", "clock.duration=12h",
        "--set", "population.installs=1200",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FAIL  pushes_after_conversion == 0" in result.stdout
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["problems"]["push_after_conversion"]["count"] > 0
    assert summary["partial"] is False


def test_interrupt_gives_partial_report(tmp_path):
    run_dir = tmp_path / "run"
    process = start_pushsim_run(run_dir, "cart_recovery")
    try:
        wait_for_line(process, "sim day 1", timeout=120)
        pids = [
            json.loads((run_dir / name).read_text())["pid"]
            for name in ("gateways.json", "backend.json")
        ]
        interrupt(process)
        # Impatient Ctrl-Cs must not cut the stop short, whether they land while the first
        # one is handled or while the components stop.
        for pause in (0.02, 0.05, 0.3):
            time.sleep(pause)
            interrupt(process)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode == 3, output[-3000:]
    assert "interrupted" in output
    assert "still stopping the components" in output
    assert "Traceback" not in output
    assert json.loads((run_dir / "run-status.json").read_text())["partial"] is True
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["partial"] is True
    assert "PARTIAL RUN" in (run_dir / "report" / "report.html").read_text()
    assert not any(process_running(pid) for pid in pids)
    assert processes_mentioning(str(run_dir)) == []


def test_brownout_backoff_judged(tmp_path):
    careful = pushsim_run(tmp_path / "careful", "apns_brownout", "--quiet")
    assert careful.returncode == 0, careful.stdout[-3000:] + careful.stderr[-3000:]
    conduct = json.loads((tmp_path / "careful" / "report" / "summary.json").read_text())[
        "backend_conduct"
    ]
    assert conduct["retries"] > 0
    assert conduct["retries_without_backoff"] == 0

    naive = pushsim_run(
        tmp_path / "naive", "apns_brownout", "--quiet", "--naive", "retry_without_backoff"
    )
    assert naive.returncode == 1, naive.stdout[-3000:] + naive.stderr[-3000:]
    assert "FAIL  retries_without_backoff == 0" in naive.stdout


def outcomes_of(run_dir) -> dict:
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    return summary["journeys"][0]["outcomes"]


def test_no_anonymous_merge_detected(tmp_path):
    careful = pushsim_run(tmp_path / "careful", "minimal", "--quiet", *SHORT)
    assert careful.returncode == 0, careful.stderr[-3000:]
    naive = pushsim_run(
        tmp_path / "naive", "minimal", "--quiet", "--naive", "no_anonymous_merge", *SHORT
    )
    assert naive.returncode == 0, naive.stderr[-3000:]

    # The same shoppers do the same things; only the backend's stitching differs.
    careful_outcomes = outcomes_of(tmp_path / "careful")
    naive_outcomes = outcomes_of(tmp_path / "naive")
    assert sum(careful_outcomes.values()) == sum(naive_outcomes.values())
    assert careful_outcomes["not_sent"] == 0
    assert naive_outcomes["not_sent"] > 0
    assert naive_outcomes["displayed"] < careful_outcomes["displayed"]


def test_no_pruning_after_410_detected(tmp_path):
    careful = pushsim_run(tmp_path / "careful", "launch_broadcast", "--quiet")
    assert careful.returncode == 0, careful.stdout[-3000:] + careful.stderr[-3000:]
    conduct = json.loads((tmp_path / "careful" / "report" / "summary.json").read_text())[
        "backend_conduct"
    ]
    assert conduct["unregistered_responses"] > 0
    assert conduct["prunes_after_unregistered"] > 0
    assert conduct["prunes_against_timestamp"] == 0

    naive = pushsim_run(
        tmp_path / "naive", "launch_broadcast", "--quiet", "--naive", "no_pruning_after_410"
    )
    assert naive.returncode == 1, naive.stdout[-3000:] + naive.stderr[-3000:]
    assert "FAIL  sends_after_unregistered == 0" in naive.stdout
    summary = json.loads((tmp_path / "naive" / "report" / "summary.json").read_text())
    assert summary["backend"] == {"backend": "reference", "naive": ["no_pruning_after_410"]}


def test_apns_sandbox_host_fails_environment_gate(tmp_path):
    # The store builds' tokens work only with production, so APNs refuses every one the
    # backend sends to the sandbox host, and the backend prunes them.
    naive = pushsim_run(
        tmp_path / "naive", "cart_recovery", "--quiet", "--naive", "apns_sandbox_host", *SHORT
    )
    assert naive.returncode == 1, naive.stdout[-3000:] + naive.stderr[-3000:]
    assert "FAIL  wrong_environment_pushes == 0" in naive.stdout
    assert "push(es) took store builds' tokens to the sandbox host" in naive.stdout

    summary = json.loads((tmp_path / "naive" / "report" / "summary.json").read_text())
    assert summary["metrics"]["wrong_environment_pushes"] > 0
    assert "api.push.apple.com" in summary["wrong_environment_warning"]
    statuses = query(
        tmp_path / "naive" / "gateways" / "deliveries.sqlite",
        "SELECT status, reason, COUNT(*) FROM deliveries WHERE service = 'apns' GROUP BY 1, 2",
    )
    assert [(status, reason) for status, reason, _ in statuses] == [(400, "BadDeviceToken")]
    fcm_accepted = query(
        tmp_path / "naive" / "gateways" / "deliveries.sqlite",
        "SELECT COUNT(*) FROM deliveries WHERE service = 'fcm' AND status = 200",
    )
    assert fcm_accepted[0][0] > 0


def test_single_device_per_person_detected(tmp_path):
    second_phones = (
        *SHORT,
        "--set", "population.multi_device=0.4",
        "--set", "population.second_device_delay.median=1h",
    )  # fmt: skip
    careful = pushsim_run(tmp_path / "careful", "minimal", "--quiet", *second_phones)
    assert careful.returncode == 0, careful.stderr[-3000:]
    naive = pushsim_run(
        tmp_path / "naive", "minimal", "--quiet", "--naive", "single_device_per_person",
        *second_phones,
    )  # fmt: skip
    assert naive.returncode == 0, naive.stderr[-3000:]

    def conduct(name):
        summary = json.loads((tmp_path / name / "report" / "summary.json").read_text())
        return summary["backend_conduct"]

    assert conduct("careful")["device_tokens_checked"] > 0
    assert conduct("careful")["device_tokens_lost"] == 0
    assert conduct("naive")["device_tokens_lost"] > 0


def test_backend_repairs_token_before_identify(tmp_path):
    # Every token is registered while anonymous and never again after identify. Over the CDP
    # batch the device lands on the anonymous profile, and the anonymous merge must carry it to
    # the person. Without the merge it stays stranded there.
    faulty = (
        *SHORT,
        "--set", "target.protocol=cdp_batch",
        "--set", "sdk_faults.token_before_identify=1.0",
    )  # fmt: skip
    careful = pushsim_run(tmp_path / "careful", "minimal", "--quiet", *faulty)
    assert careful.returncode == 0, careful.stderr[-3000:]
    naive = pushsim_run(
        tmp_path / "naive", "minimal", "--quiet", "--naive", "no_anonymous_merge", *faulty
    )
    assert naive.returncode == 0, naive.stderr[-3000:]

    assert outcomes_of(tmp_path / "careful")["stranded_anonymous"] == 0
    assert outcomes_of(tmp_path / "careful")["displayed"] > 0
    assert outcomes_of(tmp_path / "naive")["stranded_anonymous"] > 0
