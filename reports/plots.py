"""The report's figures as PNG bytes, drawn with matplotlib's Agg backend.

Every figure stays readable in greyscale: series differ by marker, line style or hatch, not by
colour alone, and every axis names its unit. Simulated time is drawn in hours since the run's
start.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from reports.locust import LatencyHistory  # noqa: E402
from sim.oracle.judge import LATENESS_OUTCOMES  # noqa: E402
from sim.oracle.result import OracleResult  # noqa: E402

HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo", "--", "**", "||")
MARKERS = ("o", "s", "^", "D", "v", "x", "*", "P")
LINESTYLES = ("-", "--", "-.", ":")
GREYS = ("0.15", "0.45", "0.7", "0.3", "0.6", "0.85")
DPI = 100


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return buffer.getvalue()


def _hours(seconds: Sequence[float]) -> np.ndarray:
    return np.asarray(seconds, dtype=float) / 3600.0


def _count_axis(axis, peak: float) -> None:
    """Give an axis of counts whole-number ticks, headroom above ``peak`` and an outside legend.

    The legend sits right of the plot, where it hides no bar, and the headroom keeps the
    tallest bar off the frame.
    """
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylim(0, max(1.0, peak * 1.15))
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _style(position: int) -> dict:
    return {
        "marker": MARKERS[position % len(MARKERS)],
        "linestyle": LINESTYLES[position % len(LINESTYLES)],
        "color": GREYS[position % len(GREYS)] if position else "black",
        "markersize": 4,
    }


def waterfall(result: OracleResult) -> bytes:
    """Draw each journey's funnel from eligible triggers to conversions, as hatched bars."""
    judged = [journey for journey in result.journeys if journey.judged] or result.journeys
    figure, axes = plt.subplots(
        len(judged), 1, figsize=(9, 2.8 * max(1, len(judged))), squeeze=False
    )
    for axis, journey in zip(axes[:, 0], judged, strict=True):
        steps = journey.waterfall() if journey.judged else []
        labels = [name for name, _ in steps]
        counts = [count for _, count in steps]
        bars = axis.barh(labels, counts, color="white", edgecolor="black")
        for position, bar in enumerate(bars):
            bar.set_hatch(HATCHES[position % len(HATCHES)])
        for bar, count in zip(bars, counts, strict=True):
            axis.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {count}",
                      va="center")  # fmt: skip
        axis.invert_yaxis()
        axis.set_xlabel("triggers (count)")
        axis.set_title(f"{journey.name}: eligible triggers to conversions")
        axis.set_xlim(0, max(counts + [1]) * 1.15)
    return _png(figure)


def delivery_over_time(result: OracleResult) -> bytes:
    """Draw pushes per simulated-time bin as hatched bars, and reactions to them as lines."""
    series = result.series
    hours = _hours(series["bin_start_s"])
    width = series["bin_width_s"] / 3600.0 * 0.9
    accepted = np.asarray(series["pushes_accepted"], dtype=float)
    figure, axis = plt.subplots(figsize=(9, 3.6))
    axis.bar(hours, accepted, width=width, align="edge", color="white", edgecolor="0.3",
             hatch="//", label="pushes accepted")  # fmt: skip
    axis.bar(hours, series["pushes_rejected"], width=width, align="edge", bottom=accepted,
             color="0.6", edgecolor="0.3", hatch="..", label="pushes rejected")  # fmt: skip
    centres = hours + width / 2
    for position, step in enumerate(("displayed", "opened", "converted")):
        axis.plot(centres, series["reactions"][step], label=step, **_style(position))
    pushes = accepted + np.asarray(series["pushes_rejected"], dtype=float)
    peak = max([*pushes, *(max(v, default=0) for v in series["reactions"].values())], default=0)
    _count_axis(axis, peak)
    axis.set_xlabel("simulated time since start (h)")
    axis.set_ylabel(f"count per {series['bin_width_s'] / 60:.0f} simulated min")
    axis.set_title("Delivery and conversion over simulated time")
    axis.grid(alpha=0.3)
    return _png(figure)


def stitching_over_time(result: OracleResult) -> bytes:
    """Draw identity-stitching failures and cross-row problems per simulated-time bin."""
    series = result.series
    hours = _hours(series["bin_start_s"])
    figure, axis = plt.subplots(figsize=(9, 3.6))
    drawn = 0
    for kind, values in series["stitching"].items():
        if any(values):
            axis.plot(hours, values, label=kind.replace("_", " "), **_style(drawn))
            drawn += 1
    if not drawn:
        axis.text(0.5, 0.5, "no stitching failures or cross-row problems", ha="center",
                  transform=axis.transAxes)  # fmt: skip
    _count_axis(axis, max((max(v, default=0) for v in series["stitching"].values()), default=0))
    axis.set_xlim(hours[0] if len(hours) else 0, hours[-1] if len(hours) else 1)
    axis.set_xlabel("simulated time since start (h)")
    axis.set_ylabel(f"count per {series['bin_width_s'] / 60:.0f} simulated min")
    axis.set_title("Stitching problems by kind (failures by due time, problems by push time)")
    axis.grid(alpha=0.3)
    return _png(figure)


def lateness_cdf(result: OracleResult) -> bytes:
    """Draw the cumulative share of pushes by lateness, in simulated s and in wall ms."""
    rows = [r for r in result.rows if r.lateness_s is not None and r.outcome in LATENESS_OUTCOMES]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, values, unit in (
        (left, [r.lateness_s for r in rows], "simulated s"),
        (right, [r.lateness_wall_ms for r in rows], "wall ms"),
    ):
        data = np.sort(np.asarray(values, dtype=float))
        if len(data):
            share = np.arange(1, len(data) + 1) / len(data)
            axis.step(data, share, where="post", color="black")
            for percentile, style in ((50, ":"), (95, "--"), (99, "-.")):
                axis.axvline(np.percentile(data, percentile), color="0.4", linestyle=style,
                             label=f"p{percentile}")  # fmt: skip
            axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, "no delivered pushes", ha="center", transform=axis.transAxes)
        axis.set_xlabel(f"arrival after trigger + delay ({unit})")
        axis.set_ylabel("share of triggers with a push")
        axis.grid(alpha=0.3)
    figure.suptitle("Trigger lateness (cumulative)")
    return _png(figure)


def reach_over_time(result: OracleResult) -> bytes:
    """Draw the reachable share of opted-in shoppers, and live versus dead registered tokens."""
    reach = result.reach
    hours = _hours(reach.at)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    shares = [reach.share(i) for i in range(len(reach.at))]
    top.plot(hours, [np.nan if s is None else s for s in shares], **_style(0),
             label="reachable on the right profile")  # fmt: skip
    top.set_ylim(0, 1.05)
    top.set_ylabel("share of opted-in shoppers")
    top.set_title("Reachable shoppers over simulated time")
    top.legend(fontsize="small")
    top.grid(alpha=0.3)
    bottom.plot(hours, reach.live_tokens, label="live registered tokens", **_style(0))
    bottom.plot(hours, reach.dead_registered_tokens, label="dead tokens still registered",
                **_style(1))  # fmt: skip
    bottom.set_xlabel("simulated time since start (h)")
    bottom.set_ylabel("device tokens (count)")
    bottom.legend(fontsize="small")
    bottom.grid(alpha=0.3)
    return _png(figure)


def status_mix(result: OracleResult) -> bytes:
    """Draw the gateways' responses by service, status and reason, stacked per time bin."""
    series = result.series
    hours = _hours(series["bin_start_s"])
    width = series["bin_width_s"] / 3600.0 * 0.9
    figure, axis = plt.subplots(figsize=(9, 3.8))
    bottom = np.zeros(len(hours))
    for position, (label, values) in enumerate(series["status_mix"].items()):
        axis.bar(hours, values, width=width, bottom=bottom, align="edge", label=label,
                 color=GREYS[position % len(GREYS)], edgecolor="black", linewidth=0.3,
                 hatch=HATCHES[position % len(HATCHES)])  # fmt: skip
        bottom += np.asarray(values, dtype=float)
    if not series["status_mix"]:
        axis.text(0.5, 0.5, "no push requests", ha="center", transform=axis.transAxes)
    _count_axis(axis, float(bottom.max(initial=0.0)))
    axis.set_xlabel("simulated time since start (h)")
    axis.set_ylabel(f"requests per {series['bin_width_s'] / 60:.0f} simulated min")
    axis.set_title("Gateway responses: service, HTTP status and reason")
    return _png(figure)


def connection_churn(result: OracleResult) -> bytes:
    """Draw the connections the backend opened to the gateways per simulated-time bin."""
    series = result.series
    hours = _hours(series["bin_start_s"])
    width = series["bin_width_s"] / 3600.0 * 0.9
    figure, axis = plt.subplots(figsize=(9, 3.0))
    axis.bar(hours, series["new_connections"], width=width, align="edge", color="0.7",
             edgecolor="black", hatch="xx", label="connections first seen")  # fmt: skip
    connections = result.conduct.connections
    totals = ", ".join(f"{service} {count}" for service, count in connections.items())
    axis.set_title(f"Connection churn per {series['bin_width_s'] / 60:.0f} simulated min "
                   f"(distinct connections: {totals or 'none'})")  # fmt: skip
    axis.set_xlabel("simulated time since start (h)")
    axis.set_ylabel("new connections (count)")
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylim(bottom=0)
    axis.legend(fontsize="small")
    return _png(figure)


def backend_latency(history: LatencyHistory) -> bytes:
    """Draw Locust's aggregated response-time percentiles over wall time."""
    figure, axis = plt.subplots(figsize=(9, 3.4))
    for position, (label, values) in enumerate(history.percentiles.items()):
        axis.plot(history.seconds, values, label=label, **_style(position))
    axis.set_xlabel("wall time since the first sample (s)")
    axis.set_ylabel("response time (ms)")
    axis.set_title("Backend latency percentiles (Locust, all requests)")
    axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    return _png(figure)
