"""Build a run's report folder: report.html, summary.json, one CSV per table and every PNG.

Example::

    path = build_report("runs/cart_recovery-1")   # writes runs/cart_recovery-1/report/
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from reports import plots
from reports.html import render
from reports.locust import EndpointLoad, read_history, read_stats
from reports.tables import write_tables
from sim.oracle import judge_run, load_run, to_summary
from sim.oracle.result import OracleResult
from sim.run.run_dir import read_status

log = logging.getLogger(__name__)

REPORT_DIR = "report"
LOCUST_HISTORY = "locust_stats_history.csv"
LOCUST_STATS = "locust_stats.csv"


def draw_figures(result: OracleResult, run_dir: Path) -> dict[str, bytes]:
    """Return every figure as PNG bytes, keyed by its title; Locust's only when its CSV exists."""
    figures = {
        "Waterfall per journey": plots.waterfall(result),
        "Delivery and conversion over time": plots.delivery_over_time(result),
        "Stitching problems over time": plots.stitching_over_time(result),
        "Trigger lateness": plots.lateness_cdf(result),
        "Reachable shoppers and device tokens": plots.reach_over_time(result),
        "Gateway status and reason mix": plots.status_mix(result),
        "Connection churn": plots.connection_churn(result),
    }
    history_path = run_dir / LOCUST_HISTORY
    if history_path.exists():
        history = read_history(history_path)
        if history is not None:
            figures["Backend latency percentiles"] = plots.backend_latency(history)
        else:
            log.warning("no Aggregated rows in %s; latency figure left out", history_path)
    return figures


def backend_load(run_dir: Path) -> list[EndpointLoad]:
    """Return Locust's per-request load and latency rows, or [] when the run has no stats file."""
    path = run_dir / LOCUST_STATS
    if not path.exists():
        return []
    return read_stats(path)


def partial_reason(run_dir: Path) -> str | None:
    """Return why ``pushsim run`` ended early, from its run-status.json, or None for a whole run."""
    status = read_status(run_dir)
    if not status.get("partial"):
        return None
    return str(status.get("reason") or "the run ended early")


def backend_under_test(run_dir: Path) -> dict | None:
    """Return ``{backend, naive}`` from run-status.json, or None for a run without them.

    ``backend`` is "reference" for the embedded reference backend, else the ``--target`` URL,
    and ``naive`` lists the reference backend's naive switches that were on.
    """
    status = read_status(run_dir)
    if "backend" not in status:
        return None
    return {"backend": str(status["backend"]), "naive": [str(s) for s in status.get("naive") or []]}


def describe_backend(backend: dict | None) -> str | None:
    """Return the backend under test in words, or None when the run did not record it.

    For example "the reference backend with naive switch no_exit_check".
    """
    if backend is None:
        return None
    if backend["backend"] != "reference":
        return f"your backend at {backend['backend']}"
    naive = backend["naive"]
    if not naive:
        return "the reference backend"
    noun = "switch" if len(naive) == 1 else "switches"
    return f"the reference backend with naive {noun} {', '.join(naive)}"


def write_report(result: OracleResult, run_dir: str | Path) -> Path:
    """Write the report folder for an already judged run and return the path of report.html."""
    run_dir = Path(run_dir)
    out = run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)

    partial = partial_reason(run_dir)
    summary = to_summary(result)
    summary["partial"] = partial is not None
    summary["partial_reason"] = partial
    backend = backend_under_test(run_dir)
    summary["backend"] = backend
    load = backend_load(run_dir)
    summary["backend_load"] = [asdict(row) for row in load] or None
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    csv_paths = write_tables(result, out)

    figures = draw_figures(result, run_dir)
    for title, png in figures.items():
        (out / (title.lower().replace(" ", "_") + ".png")).write_bytes(png)

    html_path = out / "report.html"
    html = render(
        result,
        figures,
        [p.name for p in csv_paths],
        partial=partial,
        load=load,
        backend=describe_backend(backend),
    )
    html_path.write_text(html, encoding="utf-8")
    log.info("report written to %s", html_path)
    return html_path


def build_report(run_dir: str | Path) -> Path:
    """Judge the run in ``run_dir`` and write its report folder; return the report.html path."""
    return write_report(judge_run(load_run(run_dir)), run_dir)
