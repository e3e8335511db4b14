"""Render the one-file HTML report: a one-screen summary first, then figures and tables.

Figures are embedded as base64 PNG, so the file opens anywhere without its folder. Pass and
fail are written out in words as well as coloured, so the report reads the same in greyscale.
"""

from __future__ import annotations

import base64
import datetime
from html import escape

from reports.locust import EndpointLoad
from sim.gates import GATE_METRICS
from sim.oracle.conduct import Conduct
from sim.oracle.gating import PROBLEM_GATE_METRICS
from sim.oracle.outcomes import FAILURES, LEGITIMATE, MEANINGS
from sim.oracle.result import OracleResult

# Problems listed in the summary, most frequent first.
TOP_PROBLEMS = 6
# Conduct counters shown as problems, with the key of their examples in ``Conduct.examples``.
CONDUCT_PROBLEMS = {
    "sends_after_unregistered": "send_after_unregistered",
    "retries_without_backoff": "retry_without_backoff",
    "retries_before_retry_after": "retry_before_retry_after",
}
# The gate metric that counts each problem kind, outcome or conduct figure of Top problems.
GATE_METRIC_OF = {
    **PROBLEM_GATE_METRICS,
    "stranded_anonymous": "stranded_anonymous",
    **{name: name for name in CONDUCT_PROBLEMS},
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1180px; color: #111; }
h1 { margin: 0 0 .3em; font-size: 1.6em; }
h2 { border-bottom: 2px solid #333; padding-bottom: .2em; margin-top: 1.6em; }
.banner { background: #b00020; color: #fff; padding: .8em 1em; font-size: 1.15em;
          font-weight: bold; border: 3px solid #000; margin-bottom: 1em; }
.verdict { font-size: 2em; font-weight: bold; padding: .35em .6em; border: 4px solid #000;
           display: inline-block; margin: .2em 0 .6em; }
.pass { background: #d7f5dc; } .fail { background: #ffd6d6; }
.verdict.pass::before { content: "\\2714  "; } .verdict.fail::before { content: "\\2716  "; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1.2em; }
table { border-collapse: collapse; margin: .4em 0; font-size: .92em; }
th, td { border: 1px solid #888; padding: .25em .55em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.status { font-weight: bold; }
.muted { color: #555; font-size: .9em; }
img { max-width: 100%; border: 1px solid #ccc; margin: .4em 0; }
code { font-size: 1em; }
.badge { font-weight: bold; padding: 0 .4em; border: 2px solid #000; }
.gates table { font-size: 1.05em; }
"""


def _number(value: object) -> str:
    """Format a figure for reading: thousands separated, no exponents, about 3 digits."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        size = abs(value)
        if size >= 100 or value == int(value):
            return f"{value:,.0f}"
        if size >= 1:
            return f"{value:,.1f}"
        if size < 0.0005:
            return "0"
        return f"{value:.3f}"
    return escape(str(value))


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="n">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _gates(result: OracleResult) -> str:
    if not result.gates and result.no_push_warning() is not None:
        return ('<div class="verdict fail">RUN FAILED: no push reached the gateways</div>'
                "<p>The scenario sets no gates.</p>")  # fmt: skip
    if not result.gates:
        return '<div class="verdict pass">NO GATES</div><p>The scenario sets no gates.</p>'
    failed = [gate for gate in result.gates if not gate.passed]
    if failed:
        verdict = (f'<div class="verdict fail">GATES FAILED: {len(failed)} of '
                   f"{len(result.gates)}</div>")  # fmt: skip
    elif result.no_push_warning() is not None:
        verdict = (f'<div class="verdict fail">RUN FAILED: no push reached the gateways, so all '
                   f"{len(result.gates)} gates passed with no push to judge</div>")  # fmt: skip
    else:
        verdict = f'<div class="verdict pass">GATES PASSED: all {len(result.gates)}</div>'
    ungated = result.ungated_problems_warning()
    if ungated is not None:
        verdict += f'<div class="banner" role="alert">NOT GATED: {escape(ungated)}.</div>'
    environments = result.wrong_environment_note()
    if environments is not None:
        verdict += (f'<div class="banner" role="alert">WRONG APNs ENVIRONMENT: '
                    f"{escape(environments)}.</div>")  # fmt: skip
    rows = []
    for gate in result.gates:
        metric = GATE_METRICS.get(gate.metric)
        word = "PASS" if gate.passed else "FAIL"
        rows.append([
            f"<code>{escape(gate.gate)}</code>",
            _number(gate.value),
            _number(gate.threshold),
            escape(metric.unit if metric else ""),
            f'<span class="badge {"pass" if gate.passed else "fail"}">{word}</span> '
            f"{escape(gate.note)}",
        ])  # fmt: skip
    return verdict + _table(["gate", "value", "threshold", "unit", "result"], rows, {1, 2})


def _conversion_split(split: dict[str, int]) -> str:
    text = (
        f"{split.get('incremental', 0)} incremental, {split.get('pulled_forward', 0)} pulled "
        "forward (split by the model's latent buy-anyway draw)"
    )
    unknown = split.get("unknown", 0)
    if unknown:
        # A broadcast's trigger names no cart, so no latent draw splits its conversions: they
        # are orders in the visits its pushes opened.
        text += (
            f", {unknown} from triggers that name no cart, such as a broadcast's, which no "
            "latent draw splits"
        )
    return text


def _waterfalls(result: OracleResult) -> str:
    parts = []
    for journey in result.journeys:
        if not journey.judged:
            parts.append(f"<p><b>{escape(journey.name)}</b>: {escape(journey.note)}</p>")
            continue
        eligible = journey.eligible or 1
        rows = [
            [escape(step), _number(count), f"{count / eligible:.1%}"]
            for step, count in journey.waterfall()
        ]
        split = journey.conversions
        parts.append(
            f"<h3>{escape(journey.name)}</h3>"
            + _table(["step", "triggers", "of eligible"], rows, {1, 2})
            + f'<p class="muted">{journey.triggers} triggers, {journey.excluded} excluded near '
            f"the end, {journey.trigger_events_dropped} trigger events dropped by the "
            f"generator. Conversions: {_conversion_split(split)}.</p>"
        )
        if journey.pacing is not None:
            parts.append(f"<p>Pacing: {escape(journey.pacing.describe())}.</p>")
    if parts:
        parts.append(
            '<p class="muted">Each step counts the triggers that got at least that far, so a '
            "push that was opened counts as delivered and displayed too. The Outcomes table counts "
            "each trigger once, at its furthest step: there, delivered means accepted by the "
            "gateway and never shown.</p>"
        )
    return "".join(parts)


def _top_problems(result: OracleResult) -> str:
    # Each entry is (count, name, examples). A name is a failure outcome, a problem kind or a
    # conduct figure.
    entries: list[tuple[int, str, str]] = []
    for outcome in FAILURES:
        rows = [r for r in result.rows if r.outcome == outcome]
        if rows:
            examples = ", ".join(r.trigger_id for r in rows[:3])
            entries.append((len(rows), outcome, examples))
    for problem in result.problems.values():
        if problem.count:
            entries.append((problem.count, problem.kind, "; ".join(problem.examples[:3])))
    conduct = result.conduct
    for name, example_key in CONDUCT_PROBLEMS.items():
        count = getattr(conduct, name)
        if count:
            examples = conduct.examples.get(example_key, [])
            entries.append((count, name, "; ".join(examples[:3])))
    if result.unattributed_pushes:
        entries.append((result.unattributed_pushes, "pushes tied to no trigger", ""))
    if result.unknown_token_pushes:
        hint = "such as an earlier run's, kept in the backend's store"
        entries.append(
            (result.unknown_token_pushes, "pushes to device tokens this run never issued", hint)
        )
    if not entries:
        return "<p>No failures or problems found.</p>"

    # What fails a gate leads, however small its count; the rest follow by count.
    failing = {gate.metric for gate in result.gates if not gate.passed}

    def fails_gate(name: str) -> bool:
        return GATE_METRIC_OF.get(name) in failing

    entries.sort(key=lambda entry: (not fails_gate(entry[1]), -entry[0]))
    rows = []
    for count, name, examples in entries[:TOP_PROBLEMS]:
        label = name.replace("_", " ") + (" (fails a gate)" if fails_gate(name) else "")
        rows.append([escape(label), _number(count), escape(examples)])
    table = _table(["problem", "count", "example ids"], rows, {1})
    hint = result.stitching_hint()
    return table + (f"<p>{escape(hint)}.</p>" if hint else "")


def _generator(result: OracleResult) -> str:
    health = result.generator
    lag = health.lag_ms
    by_status = ", ".join(f"{k} {v:,}" for k, v in health.calls_by_status.items())
    if "local" in health.calls_by_status:
        # A call that sends no request, such as a logout, or a token the Track API keeps
        # until identify.
        by_status += " (local: no request left the phone, such as a logout)"
    rows = [
        ["SDK calls by status", escape(by_status)],
        ["dropped", f"{health.dropped:,} ({health.drop_share:.2%})"],
        ["schedule lag p50 / p95 / p99 / max (wall ms)",
         " / ".join(_number(lag.get(k)) for k in ("p50", "p95", "p99", "max"))],
        ["verdict", "FELL BEHIND" if health.fell_behind else "kept up"],
    ]  # fmt: skip
    return _table(["generator", ""], rows)


def _sdk_errors(result: OracleResult) -> str:
    errors = result.sdk_errors
    if errors.error_rate is None:
        return "<p>No SDK call was sent, so no response was judged.</p>"
    responses = ", ".join(f"{label}: {count:,}" for label, count in errors.responses.items())
    rows = [
        ["sent", _number(errors.sent)],
        ["failed: no 2xx response, or none at all",
         f"{errors.failed:,} ({errors.error_rate:.2%})"],
        ["failed by response", escape(errors.describe_failures() or "none")],
        ["all by response", escape(responses)],
    ]  # fmt: skip
    return _table(["SDK calls", ""], rows)


def _figures(figures: dict[str, bytes]) -> str:
    parts = []
    for title, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<h3>{escape(title)}</h3><img alt="{escape(title)}" '
                     f'src="data:image/png;base64,{data}">')  # fmt: skip
    return "".join(parts)


def _outcome_table(result: OracleResult) -> str:
    journeys = result.journeys
    header = ["outcome", "kind", "meaning"] + [j.name for j in journeys]
    rows = []
    for outcome in next(iter(journeys)).outcomes if journeys else []:
        kind = "legitimate" if outcome in LEGITIMATE else (
            "failure" if outcome in FAILURES else "delivered")  # fmt: skip
        meaning = escape(MEANINGS.get(outcome, ""))
        counts = [_number(j.outcomes[outcome]) for j in journeys]
        rows.append([escape(outcome), kind, meaning, *counts])
    return _table(header, rows, set(range(3, 3 + len(journeys))))


def _metrics(result: OracleResult) -> str:
    """Tabulate every gate metric with its value, so a reader can choose what to gate on."""
    gated = {gate.metric for gate in result.gates}
    rows = [
        [f"<code>{escape(name)}</code>", _number(result.metrics.get(name)), escape(metric.unit),
         "yes" if name in gated else "", escape(metric.description)]
        for name, metric in GATE_METRICS.items()
    ]  # fmt: skip
    note = ('<p class="muted">Every metric a scenario gate may check; n/a means the run gave '
            "nothing to measure.</p>")  # fmt: skip
    return note + _table(["metric", "value", "unit", "gated", "meaning"], rows, {1})


def _conduct(result: OracleResult) -> str:
    conduct = result.conduct
    rows = [
        ["429/503 responses", _number(conduct.retryable_errors)],
        ["retries of them", _number(conduct.retries)],
        ["retries without backoff", _number(conduct.retries_without_backoff)],
        ["retries before Retry-After", _number(conduct.retries_before_retry_after)],
        ["429/503 with no retry after it (the sender gave up)",
         _number(conduct.errors_never_retried)],
        ["unregistered responses (410 / UNREGISTERED)", _number(conduct.unregistered_responses)],
        ["sends after an unregistered response", _number(conduct.sends_after_unregistered)],
        ["connections per service", escape(", ".join(
            f"{k} {v}" for k, v in conduct.connections.items()) or "none")],
        ["requests per connection", _number(conduct.requests_per_connection)],
        ["pruning after 410 / UNREGISTERED", escape(_pruning(conduct))],
    ]  # fmt: skip
    return _table(["backend conduct", ""], rows, {1})


def _unknown_tokens(result: OracleResult) -> str:
    count = result.unknown_token_pushes
    return f", {count:,} to device tokens this run never issued" if count else ""


def _pruning(conduct: Conduct) -> str:
    if not conduct.pruning_checked:
        return "not checked: " + conduct.pruning_note
    return (
        f"{conduct.prunes_after_unregistered} prunes after an APNs 410, "
        f"{conduct.prunes_against_timestamp} of them against its timestamp"
    )


def _milliseconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _backend_load(load: list[EndpointLoad]) -> str:
    if not load:
        return "<p>No Locust statistics (locust_stats.csv) in this run directory.</p>"
    header = ["request", "count", "failed", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    rows = [
        [escape(f"{row.method} {row.name}".strip()), _number(row.requests),
         _number(row.failures), f"{row.requests_per_s:,.1f}", _milliseconds(row.p50_ms),
         _milliseconds(row.p95_ms), _milliseconds(row.p99_ms), _milliseconds(row.max_ms)]
        for row in load
    ]  # fmt: skip
    note = ("<p class=\"muted\">Response times of the SDK requests, in wall milliseconds, as "
            "Locust measured them over the whole run.</p>")  # fmt: skip
    return note + _table(header, rows, set(range(1, 8)))


def _lateness(result: OracleResult) -> str:
    keys = ("count", "p50", "p95", "p99", "max")
    rows = [
        ["simulated s"] + [_number(result.lateness_s.get(k)) for k in keys],
        ["wall ms"] + [_number(result.lateness_wall_ms.get(k)) for k in keys],
    ]
    return _table(["lateness", *keys], rows, {1, 2, 3, 4, 5})


def render(
    result: OracleResult,
    figures: dict[str, bytes],
    csv_names: list[str],
    *,
    partial: str | None = None,
    load: list[EndpointLoad] | None = None,
    backend: str | None = None,
) -> str:
    """Return the report as one HTML document.

    ``partial`` is the reason a run ended early, ``load`` contains Locust's rows of SDK request
    load and latency, and ``backend`` names the backend under test, when the run has them.
    """
    banner = ""
    if partial is not None:
        where = ""
        if result.reached is not None:
            where = (f" The model reached {result.reached / 3600:.1f} of "
                     f"{result.duration / 3600:g} simulated hours.")  # fmt: skip
        banner += (f'<div class="banner" role="alert">PARTIAL RUN: {escape(partial)}. The '
                   f"figures cover only what was collected before it ended."
                   f"{where}</div>")  # fmt: skip
    if result.generator.fell_behind:
        health = result.generator
        banner += (f'<div class="banner" role="alert">GENERATOR FELL BEHIND: backend figures '
                  f"cannot be trusted. It dropped {health.dropped:,} SDK calls "
                  f"({health.drop_share:.1%}).</div>")  # fmt: skip
    if result.sdk_errors.over_limit:
        errors = result.sdk_errors
        banner += (f'<div class="banner" role="alert">BACKEND DID NOT ACCEPT SDK CALLS: '
                   f"{errors.failed:,} of {errors.sent:,} ({errors.error_rate:.1%}) got no 2xx "
                   f"response ({escape(errors.describe_failures())}). The backend missed that "
                   "share of the shoppers' activity.</div>")  # fmt: skip
    no_push = result.no_push_warning()
    if no_push is not None:
        banner += (f'<div class="banner" role="alert">NO PUSHES: {escape(no_push)}. Gates on '
                   "bad pushes pass when nothing is sent, so the run fails.</div>")  # fmt: skip
    for journey in result.journeys:
        warning = journey.exclusion_warning(partial is not None)
        if warning is not None:
            banner += (f'<div class="banner" role="alert">NOT JUDGED: {escape(warning)}. The '
                       "gates do not cover these triggers.</div>")  # fmt: skip
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    csv_list = ", ".join(f'<a href="{escape(name)}">{escape(name)}</a>' for name in csv_names)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>pushsim report: {escape(result.scenario)}</title><style>{STYLE}</style></head>
<body>
{banner}
<h1>pushsim report: {escape(result.scenario)}</h1>
<p class="muted">{result.duration / 3600:g} simulated hours at time scale
{result.time_scale:g}, {result.push_requests:,} push requests,
{result.unattributed_pushes:,} not tied to any trigger{_unknown_tokens(result)}. Written
{created}.</p>
{f"<p>Backend under test: <b>{escape(backend)}</b>.</p>" if backend else ""}
<div class="grid">
<section class="gates"><h2>Gates</h2>{_gates(result)}</section>
<section><h2>Waterfall</h2>{_waterfalls(result)}</section>
<section><h2>Top problems</h2>{_top_problems(result)}</section>
<section><h2>Generator health</h2>{_generator(result)}</section>
<section><h2>SDK responses</h2>{_sdk_errors(result)}</section>
</div>
<h2>Outcomes</h2>{_outcome_table(result)}
<h2>Metrics</h2>{_metrics(result)}
<h2>Trigger lateness</h2>{_lateness(result)}
<h2>Backend conduct</h2>{_conduct(result)}
<h2>Backend load</h2>{_backend_load(load or [])}
<h2>Figures</h2>{_figures(figures)}
<h2>Data</h2><p>Tables as CSV beside this file: {csv_list}; every figure as PNG; the
summary as <a href="summary.json">summary.json</a>.</p>
</body></html>
"""
