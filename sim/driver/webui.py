"""pushsim's own table in Locust: a web UI tab, the headless summary and a CSV file.

Locust's request statistics stay about the backend. Schedule lag, drops and trigger-to-gateway
latency describe the load generator and the end-to-end path, so they get their own table.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from sim.driver.timing import TimingTable

TAB_KEY = "pushsim"
TIMING_COLUMNS = [
    {"key": "name", "title": "Series"},
    {"key": "count", "title": "Count"},
    {"key": "drops", "title": "Dropped"},
    {"key": "drop_percent", "title": "Drop %"},
    {"key": "p50", "title": "p50 (ms)"},
    {"key": "p95", "title": "p95 (ms)"},
    {"key": "p99", "title": "p99 (ms)"},
    {"key": "max", "title": "Max (ms)"},
]


def install_web_ui(environment, state) -> None:
    """Add the pushsim tab, its data in the stats poll, and a CSV download to Locust's UI."""
    from flask import Response, jsonify, request
    from locust.runners import STATE_RUNNING, STATE_SPAWNING

    from sim.driver.plugin import current_counters, second_start_message

    web_ui = environment.web_ui
    web_ui.template_args["extended_tabs"] = [{"title": "pushsim", "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [{"key": TAB_KEY, "structure": TIMING_COLUMNS}]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./pushsim/timing.csv", "title": "Download pushsim timing CSV"}
    ]

    @web_ui.app.after_request
    def add_pushsim_stats(response):
        if request.path != "/stats/requests" or response.status_code != 200:
            return response
        data = response.get_json(silent=True) or {}
        rows = state.timing.rows()
        counters = current_counters()
        rows += [{"name": f"counter: {k}", "count": v} for k, v in sorted(counters.items())]
        data["extended_stats"] = [{"key": TAB_KEY, "data": rows}]
        response.set_data(json.dumps(data))
        return response

    @web_ui.app.before_request
    def reject_second_start():
        # The model and its truth ledgers belong to the first run, so a new start after it ended
        # is rejected here, where Locust's start form shows the message. A POST while the run
        # goes on changes its user count and passes.
        if request.method != "POST" or not request.path.endswith("/swarm"):
            return None
        runner = environment.runner
        running = runner is not None and runner.state in (STATE_RUNNING, STATE_SPAWNING)
        if not state.epoch_announced or running:
            return None
        message = second_start_message(environment)
        return jsonify({"success": False, "message": message, "host": environment.host})

    @web_ui.app.route("/pushsim/timing.csv")
    def timing_csv():
        buffer = io.StringIO()
        csv.writer(buffer).writerows(state.timing.csv_lines())
        return Response(
            buffer.getvalue(),
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment; filename=pushsim_timing.csv"},
        )


def print_summary(timing: TimingTable, counters: dict[str, int]) -> None:
    """Print the timing table and the live counters after Locust's own summary."""
    print(timing.summary(), file=sys.stderr)
    if counters:
        line = ", ".join(f"{key} {value}" for key, value in sorted(counters.items()))
        print(f"pushsim counters: {line}", file=sys.stderr)


def write_timing_csv(timing: TimingTable, path: Path) -> None:
    """Write the timing table next to Locust's CSV files."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(timing.csv_lines())
