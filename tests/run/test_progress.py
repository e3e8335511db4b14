"""Progress lines of a running rehearsal, read from a metrics server on loopback."""

from __future__ import annotations

import pytest

from sim.driver.sdk_records import sdk_call_line
from sim.formats.epoch import Epoch
from sim.formats.truth import TruthWriter
from sim.model.ports import SdkCall
from sim.oracle.generator import LIVE_WARNING_MIN_CALLS
from sim.run.progress import (
    LedgerTail,
    accepted_pushes,
    behind_warning,
    progress_line,
    rejection_warning,
)

METRICS = (
    "# TYPE pushsim_gateway_requests_total counter\n"
    'pushsim_gateway_requests_total{service="apns",status="200"} 30\n'
    'pushsim_gateway_requests_total{service="fcm",status="200"} 12\n'
    'pushsim_gateway_requests_total{service="apns",status="410"} 5\n'
)


@pytest.fixture
def metrics_url(http_server):
    server, url = http_server
    server.body = METRICS
    return f"{url}/metrics"


def line(tmp_path, metrics_url: str | None, pushes_before: int = 0) -> str:
    epoch = Epoch(wall_t0=1_700_000_000.0, sim_t0=1_800_000_000.0, time_scale=60.0)
    tail = LedgerTail(tmp_path)
    return progress_line(epoch, 1_800_000_000.0, 3600.0, tmp_path, tail, metrics_url,
                         pushes_before=pushes_before)  # fmt: skip


def write_truth(path, sent: int, dropped: int, converted: int = 0) -> None:
    """Write a truth ledger as the driver does: SDK call lines, then reactions."""
    call = SdkCall(60.0, 1, 1, "track", "d1-0", "p1-0", "a1", None, event="product_viewed")
    with TruthWriter(path) as writer:
        for status, count in (("sent", sent), ("dropped", dropped)):
            for _ in range(count):
                writer.write_line(sdk_call_line(call, status, 200 if status == "sent" else None))
        for _ in range(converted):
            writer.write({"v": 1, "kind": "reaction", "at": 90.0, "step": "converted"})


def test_accepted_pushes_sums_status_200(metrics_url):
    assert accepted_pushes(metrics_url) == 42


def test_progress_counts_pushes_of_this_run(tmp_path, metrics_url):
    assert "pushes accepted 42" in line(tmp_path, metrics_url)
    assert "pushes accepted 10" in line(tmp_path, metrics_url, pushes_before=32)


def test_progress_without_metrics(tmp_path):
    text = line(tmp_path, None)

    assert "pushes accepted -" in text
    assert "- req/s" in text
    assert "conversions 0" in text


def write_locust_csv(
    run_dir, requests: int, failed: int, failures: dict[str, int], p95: str = "N/A"
) -> None:
    """Write the two CSV files Locust keeps up to date during a run, as it lays them out."""
    (run_dir / "locust_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count,Requests/s,95%\n"
        f"POST,/api/v1/customers/[id],{requests},{failed},12.5,{p95}\n"
        f",Aggregated,{requests},{failed},12.5,{p95}\n"
    )
    rows = "".join(
        f"POST,/api/v1/customers/[id],{error},{count}\n" for error, count in failures.items()
    )
    (run_dir / "locust_failures.csv").write_text(f"Method,Name,Error,Occurrences\n{rows}")


def test_rejection_warning_names_fix(tmp_path):
    write_locust_csv(tmp_path, 400, 399, {"BadStatus(401)": 390, "TimeoutError('timed out')": 9})

    warning = rejection_warning(tmp_path)

    assert warning.startswith("the backend rejected 399 of 400 SDK requests so far (401: 390, ")
    assert "no response: 9)" in warning
    assert "the backend rejected the credentials: check target.site_id" in warning
    assert warning.endswith("Ctrl-C stops it and writes a partial report.")


@pytest.mark.parametrize("status", [405, 501])
def test_rejection_warning_other_server(tmp_path, status):
    # Python's http.server, for example, responds to the SDK's POST with 501.
    write_locust_csv(tmp_path, 300, 300, {f"BadStatus({status})": 300})

    warning = rejection_warning(tmp_path)

    assert f"({status}: 300)" in warning
    assert "check that it is the push backend's base URL" in warning


@pytest.mark.parametrize(
    ("requests", "failed"),
    [(150, 150), (400, 390), (400, 0)],
    ids=["too few requests", "some accepted", "all accepted"],
)
def test_rejection_warning_quiet(tmp_path, requests, failed):
    write_locust_csv(tmp_path, requests, failed, {"BadStatus(404)": failed})

    assert rejection_warning(tmp_path) is None


def test_rejection_warning_before_locust_csv(tmp_path):
    assert rejection_warning(tmp_path) is None


def test_progress_shows_current_rate(tmp_path, metrics_url):
    # The stats CSV averages since the start, and the history's Requests/s column trails the
    # requests sent, so the rate is the slope of Total Request Count over the last 3 s.
    write_locust_csv(tmp_path, 4100, 7, {})
    header = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,Total Request Count,"
    header += "Total Failure Count\n"
    history = [(10, 0.0, 2600, 0), (11, 25.0, 2900, 0), (12, 85.6, 3200, 7),
               (13, 133.5, 3500, 7), (14, 168.3, 3800, 7), (15, 189.4, 4100, 7)]  # fmt: skip
    rows = "".join(
        f"{second},20,,Aggregated,{rate:.1f},0.0,{total},{failed}\n"
        f"{second},20,POST,/api/v1/customers/[id],{rate:.1f},0.0,{total},{failed}\n"
        for second, rate, total, failed in history
    )
    (tmp_path / "locust_stats_history.csv").write_text(header + rows + "16,20,,Aggreg")

    text = line(tmp_path, metrics_url)

    assert "300.0 req/s  failed 7" in text


def write_aggregated_history(directory, totals: list[tuple[int, int]]) -> None:
    """Write a stats history of Aggregated rows only: (second, Total Request Count) each."""
    header = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,Total Request Count\n"
    rows = "".join(f"{second},20,,Aggregated,0.0,0.0,{total}\n" for second, total in totals)
    (directory / "locust_stats_history.csv").write_text(header + rows)


def test_progress_rate_with_late_worker_reports(tmp_path, metrics_url):
    # With workers, the totals rise only when a report arrives. Reports come every 3 s, or
    # every 4 s on a busy machine, so the last 4 s here have no report.
    write_locust_csv(tmp_path, 6000, 0, {})
    write_aggregated_history(tmp_path, [
        (20, 3000), (21, 3000), (22, 3000), (23, 4200), (24, 4200), (25, 4200),
        (26, 4200), (27, 5400), (28, 5400), (29, 5400), (30, 5400),
    ])  # fmt: skip

    # 1200 requests between the reports at seconds 23 and 27.
    assert "300.0 req/s" in line(tmp_path, metrics_url)


def test_progress_rate_zero_when_requests_stop(tmp_path, metrics_url):
    write_locust_csv(tmp_path, 3000, 0, {})
    stopped = [(second, 3000) for second in range(23, 31)]
    write_aggregated_history(tmp_path, [(20, 1000), (21, 2000), (22, 3000), *stopped])

    assert "0.0 req/s" in line(tmp_path, metrics_url)


def test_progress_rate_from_short_history(tmp_path, metrics_url):
    write_locust_csv(tmp_path, 500, 0, {})
    header = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,Total Request Count\n"
    rows = "1,20,,Aggregated,0.0,0.0,100\n2,20,,Aggregated,0.0,0.0,500\n"
    (tmp_path / "locust_stats_history.csv").write_text(header + rows)

    assert "400.0 req/s" in line(tmp_path, metrics_url)


def test_ledger_tail_counts_calls_and_conversions(tmp_path):
    write_truth(tmp_path / "truth-0.jsonl", sent=5, dropped=2, converted=1)
    tail = LedgerTail(tmp_path)

    tail.update()
    with open(tmp_path / "truth-0.jsonl", "a") as ledger:
        ledger.write('{"v":1,"kind":"sdk_call","status":"dropped"')  # a line still being written
    tail.update()

    assert (tail.sent, tail.dropped, tail.conversions) == (5, 2, 1)
    with open(tmp_path / "truth-0.jsonl", "a") as ledger:
        ledger.write(',"at":61.0}\n')
    tail.update()
    assert tail.dropped == 3


def test_behind_warning_names_fixes(tmp_path):
    write_truth(tmp_path / "truth-0.jsonl", sent=980, dropped=20)
    tail = LedgerTail(tmp_path)
    tail.update()

    warning = behind_warning(tail)

    assert warning.startswith("the driver dropped 20 of 1,000 SDK calls so far (2.0%)")
    assert "add --processes" in warning
    assert "add --users" in warning
    assert warning.endswith("Ctrl-C stops it and writes a partial report.")


@pytest.mark.parametrize(
    ("p95", "wanted", "unwanted"),
    [
        ("4", "The backend responds fast (p95 4 ms), so the driver's process is short of CPU: "
         "add --processes", "add --users"),
        ("800", "short of CPU (add --processes) or every lane waits for slow responses "
         "(p95 800 ms) (add --users)", "responds fast"),
    ],
    ids=["fast backend", "slow backend"],
)  # fmt: skip
def test_behind_warning_fix_follows_response_times(tmp_path, p95, wanted, unwanted):
    write_truth(tmp_path / "truth-0.jsonl", sent=980, dropped=20)
    write_locust_csv(tmp_path, 1000, 0, {}, p95=p95)
    tail = LedgerTail(tmp_path)
    tail.update()

    warning = behind_warning(tail, tmp_path)

    assert wanted in warning
    assert unwanted not in warning


@pytest.mark.parametrize(
    ("sent", "dropped"),
    [(LIVE_WARNING_MIN_CALLS // 2, LIVE_WARNING_MIN_CALLS // 2 - 1), (990, 10), (1000, 0)],
    ids=["too few calls", "at the report's limit", "none dropped"],
)
def test_behind_warning_quiet(tmp_path, sent, dropped):
    write_truth(tmp_path / "truth-0.jsonl", sent=sent, dropped=dropped)
    tail = LedgerTail(tmp_path)
    tail.update()

    assert behind_warning(tail) is None


def test_progress_shows_dropped_calls(tmp_path):
    write_truth(tmp_path / "truth-0.jsonl", sent=3, dropped=4, converted=2)

    text = line(tmp_path, None)

    assert "dropped 4" in text
    assert "conversions 2" in text
