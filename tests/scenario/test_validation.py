"""Every validation rule, each with a failing and a passing case."""

from __future__ import annotations

import textwrap

import pytest

from sim.scenario import ScenarioError, load_scenario


def problems(text: str, overrides: tuple[str, ...] = ()) -> list:
    """Return the findings for a scenario text, or an empty list when it is valid."""
    try:
        loaded = load_scenario("case.yaml", overrides, text=textwrap.dedent(text))
    except ScenarioError as error:
        return error.findings
    return loaded.warnings


# Each case: (id, failing text, the key path it must name, a phrase of the message, the same
# scenario put right). The cases run as two tests: the failing one and the passing one.
CASES = [
    ("unknown-top-key", "permision: {}\n", "permision", "did you mean 'permission'",
     "permission: {}\n"),
    ("unknown-nested-key", "clock:\n  duratoin: 1d\n", "clock.duratoin", "did you mean 'duration'",
     "clock:\n  duration: 1d\n"),
    ("unknown-key-in-list", "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "    exit: {event: order_completed, matc: cart_id}\n", "journeys[0].exit.matc",
     "did you mean 'match'", "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "    exit: {event: order_completed, match: cart_id}\n"),
    ("unknown-platform-key", "population:\n  platforms: {ios: 0.5, andriod: 0.5}\n",
     "population.platforms.andriod", "did you mean 'android'",
     "population:\n  platforms: {ios: 0.5, android: 0.5}\n"),
    ("string-for-number", "population:\n  installs: many\n", "population.installs",
     "expected integer", "population:\n  installs: 100\n"),
    ("bool-for-integer", "seed: true\n", "seed", "expected integer", "seed: 3\n"),
    ("list-for-mapping", "clock: [1, 2]\n", "clock", "expected a mapping", "clock: {}\n"),
    ("mapping-for-list", "gates: {a: 1}\n", "gates", "expected a list", "gates: []\n"),
    ("probability-above-1", "reactions:\n  broken_link: 1.4\n", "reactions.broken_link",
     "between 0 and 1", "reactions:\n  broken_link: 0.4\n"),
    ("probability-below-0", "identity:\n  logout: -0.1\n", "identity.logout",
     "between 0 and 1", "identity:\n  logout: 0.1\n"),
    ("probability-in-mapping", "permission:\n  opt_in: {ios: 2}\n", "permission.opt_in.ios",
     "between 0 and 1", "permission:\n  opt_in: {ios: 0.2}\n"),
    ("transition-row-above-1", "funnel:\n  transitions:\n    product_viewed: "
     "{product_viewed: 0.9, added_to_cart: 0.2}\n", "funnel.transitions.product_viewed",
     "at most 1", "funnel:\n  transitions:\n    product_viewed: "
     "{product_viewed: 0.7, added_to_cart: 0.2}\n"),
    ("transition-unknown-state", "funnel:\n  transitions:\n    cart: {product_viewed: 0.5}\n",
     "funnel.transitions.cart", "unknown funnel state",
     "funnel:\n  transitions:\n    added_to_cart: {product_viewed: 0.5}\n"),
    ("transition-unknown-event", "funnel:\n  transitions:\n    session_start: {viewed: 0.5}\n",
     "funnel.transitions.session_start.viewed", "unknown retention event",
     "funnel:\n  transitions:\n    session_start: {product_viewed: 0.5}\n"),
    ("negative-duration", "clock:\n  drain: -2h\n", "clock.drain", "must not be negative",
     "clock:\n  drain: 2h\n"),
    ("bad-duration-unit", "sessions:\n  min_gap: 30 minutes\n", "sessions.min_gap",
     "invalid duration", "sessions:\n  min_gap: 30m\n"),
    ("zero-duration-run", "clock:\n  duration: 0s\n", "clock.duration", "longer than 0",
     "clock:\n  duration: 1h\n"),
    ("zero-time-scale", "clock:\n  time_scale: 0\n", "clock.time_scale", "> 0",
     "clock:\n  time_scale: 60\n"),
    ("bad-datetime", "clock:\n  start: yesterday\n", "clock.start", "ISO 8601",
     "clock:\n  start: 2026-11-27T00:00:00Z\n"),
    ("bad-time-of-day", "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "    quiet_hours: {start: '25:00', end: '08:00'}\n", "journeys[0].quiet_hours.start",
     "HH:MM", "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "    quiet_hours: {start: '22:00', end: '08:00'}\n"),
    ("bad-choice", "permission:\n  prompt: first_launch\n", "permission.prompt",
     "did you mean 'first_open'", "permission:\n  prompt: first_open\n"),
    ("unknown-trigger-event", "journeys:\n  - name: a\n    trigger: {event: add_to_crt}\n",
     "journeys[0].trigger.event", "did you mean 'added_to_cart'",
     "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"),
    ("alias-trigger-event", "journeys:\n  - name: a\n    trigger: {event: add_to_cart}\n",
     "journeys[0].trigger.event", "is an alias",
     "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"),
    ("missing-trigger-event", "journeys:\n  - name: a\n", "journeys[0].trigger.event",
     "missing event", "journeys:\n  - name: a\n    trigger: {event: product_viewed}\n"
     "    link: shop://product/{sku}\n"),
    ("link-field-not-carried", "journeys:\n  - name: a\n    trigger: {event: checkout_started}\n"
     "    link: shop://product/{sku}\n", "journeys[0].link", "{sku} is not carried by the "
     "trigger event checkout_started", "journeys:\n  - name: a\n"
     "    trigger: {event: checkout_started}\n    link: shop://cart/{cart_id}\n"),
    ("link-without-trigger-field", "journeys:\n  - name: a\n    kind: delay_range\n"
     "    trigger: {event: order_completed}\n    delay_max: 2h\n    link: shop://reorder\n",
     "journeys[0].link", "such as {order_id}, {cart_id}", "journeys:\n  - name: a\n"
     "    kind: delay_range\n    trigger: {event: order_completed}\n    delay_max: 2h\n"
     "    link: shop://reorder/{order_id}\n"),
    ("broadcast-link-with-trigger-field", "journeys:\n  - name: a\n    kind: broadcast\n"
     "    at: 2026-11-26T12:00:00Z\n", "journeys[0].link", "no trigger event to fill {cart_id}",
     "journeys:\n  - name: a\n    kind: broadcast\n    at: 2026-11-26T12:00:00Z\n"
     "    link: shop://deals\n"),
    ("journeys-share-link", "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "  - name: b\n    trigger: {event: added_to_cart}\n    delay: 6h\n", "journeys[1].link",
     "cannot tell their pushes apart", "journeys:\n  - name: a\n"
     "    trigger: {event: added_to_cart}\n  - name: b\n    trigger: {event: added_to_cart}\n"
     "    delay: 6h\n    link: shop://cart/{cart_id}?journey=b\n"),
    ("quiet-hours-no-length", "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "    quiet_hours: {start: '08:00', end: '08:00'}\n", "journeys[0].quiet_hours",
     "window of no length", "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "    quiet_hours: {start: '22:00', end: '08:00'}\n"),
    ("unquoted-time-of-day", "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "    quiet_hours: {start: 22:00}\n", "journeys[0].quiet_hours.start",
     "quote it: '22:00'", "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "    quiet_hours: {start: '22:00'}\n"),
    ("gate-ratio-out-of-range", "gates: [delivery_rate >= 1.5]\n", "gates[0]",
     "give a threshold between 0 and 1", "gates: [delivery_rate >= 0.9]\n"),
    ("gate-count-negative", "gates: [wrong_person_pushes <= -1]\n", "gates[0]",
     "give a threshold of 0 or more", "gates: [wrong_person_pushes <= 0]\n"),
    ("unknown-exit-event", "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "    exit: {event: purchase, match: cart_id}\n", "journeys[0].exit.event",
     "unknown event", "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "    exit: {event: order_completed, match: cart_id}\n"),
    ("exit-match-not-carried", "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "    exit: {event: order_completed, match: cartid}\n", "journeys[0].exit.match",
     "not carried by order_completed", "journeys:\n  - name: a\n    trigger: "
     "{event: added_to_cart}\n    exit: {event: order_completed, match: cart_id}\n"),
    ("repeated-count-1", "journeys:\n  - name: b\n    kind: repeated_event\n    trigger: "
     "{event: product_viewed, count: 1, same: sku}\n    link: shop://product/{sku}\n",
     "journeys[0].trigger.count", "at least 2", "journeys:\n  - name: b\n"
     "    kind: repeated_event\n    trigger: {event: product_viewed, count: 2, same: sku}\n"
     "    link: shop://product/{sku}\n"),
    ("delay-range-reversed", "journeys:\n  - name: r\n    kind: delay_range\n    trigger: "
     "{event: order_completed}\n    delay: 35d\n    delay_max: 21d\n", "journeys[0].delay_max",
     "longer than delay", "journeys:\n  - name: r\n    kind: delay_range\n    trigger: "
     "{event: order_completed}\n    delay: 21d\n    delay_max: 35d\n"),
    ("broadcast-without-time", "journeys:\n  - name: launch\n    kind: broadcast\n"
     "    link: shop://deals\n", "journeys[0].at", "needs at",
     "journeys:\n  - name: launch\n    kind: broadcast\n    link: shop://deals\n"
     "    at: 2026-11-27T09:00:00Z\n"),
    ("link-placeholder", "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "    link: 'shop://cart/{basket}'\n", "journeys[0].link", "unknown placeholder",
     "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n"
     "    link: 'shop://cart/{cart_id}'\n"),
    ("duplicate-journey-name", "journeys:\n  - {name: a, trigger: {event: added_to_cart}}\n"
     "  - {name: a, trigger: {event: product_viewed}}\n", "journeys[1].name", "duplicate",
     "journeys:\n  - {name: a, trigger: {event: added_to_cart}}\n"
     "  - {name: b, trigger: {event: product_viewed}, link: 'shop://product/{sku}'}\n"),
    ("journey-without-name", "journeys:\n  - trigger: {event: added_to_cart}\n",
     "journeys[0].name", "missing name",
     "journeys:\n  - name: c\n    trigger: {event: added_to_cart}\n"),
    ("unknown-gate-metric", "gates: ['delivery_rat >= 0.9']\n", "gates[0]",
     "did you mean 'delivery_rate'", "gates: ['delivery_rate >= 0.9']\n"),
    ("malformed-gate", "gates: ['delivery_rate is high']\n", "gates[0]", "metric op value",
     "gates: ['delivery_rate >= 0.5']\n"),
    ("platform-shares", "population:\n  platforms: {ios: 0.7, android: 0.7}\n",
     "population.platforms", "sum to 1",
     "population:\n  platforms: {ios: 0.3, android: 0.7}\n"),
    ("unknown-time-zone", "population:\n  timezones: {Mars/Olympus: 1.0}\n",
     "population.timezones.Mars/Olympus", "IANA",
     "population:\n  timezones: {Asia/Tokyo: 1.0}\n"),
    ("hourly-length", "population:\n  arrival:\n    hourly: [1, 2, 3]\n",
     "population.arrival.hourly", "expected 24", "population:\n  arrival:\n    hourly: "
     "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"),
    ("permission-shares", "permission:\n  opt_in: {ios: 0.8}\n  not_determined: {ios: 0.3}\n",
     "permission.not_determined.ios", "above 1",
     "permission:\n  opt_in: {ios: 0.6}\n  not_determined: {ios: 0.3}\n"),
    ("value-moment-event", "permission:\n  value_moment: add_to_basket\n",
     "permission.value_moment", "unknown event",
     "permission:\n  value_moment: checkout_started\n"),
    ("external-without-url", "target:\n  backend: external\n", "target.url", "http or https",
     "target:\n  backend: external\n  url: http://127.0.0.1:8080\n"),
    ("errors-fault-reason", "gateways:\n  faults:\n    - {kind: errors, rate: 0.1, "
     "duration: 1h}\n", "gateways.faults[0].reason", "needs a reason",
     "gateways:\n  faults:\n    - {kind: errors, rate: 0.1, duration: 1h, "
     "reason: InternalServerError}\n"),
    ("quota-on-apns", "gateways:\n  faults:\n    - {kind: quota, service: apns, limit: 10, "
     "duration: 1h}\n", "gateways.faults[0].service", "only on FCM",
     "gateways:\n  faults:\n    - {kind: quota, service: fcm, limit: 10, duration: 1h}\n"),
    ("stream-limit-zero", "gateways:\n  faults:\n    - {kind: stream_limit, duration: 1h}\n",
     "gateways.faults[0].limit", "limit above 0",
     "gateways:\n  faults:\n    - {kind: stream_limit, duration: 1h, limit: 4}\n"),
    ("duplicate-yaml-key", "seed: 1\nseed: 2\n", "seed", "duplicate key", "seed: 2\n"),
    ("push-metric-trigger", "journeys:\n  - {name: a, trigger: {event: delivered}}\n",
     "journeys[0].trigger.event", "is a push metric",
     "journeys:\n  - {name: a, trigger: {event: checkout_started}}\n"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "path", "phrase"),
    [pytest.param(bad, path, phrase, id=name) for name, bad, path, phrase, _ in CASES],
)
def test_rule_rejects(text, path, phrase):
    findings = [f for f in problems(text) if f.severity == "error"]
    matching = [f for f in findings if f.path == path]
    assert matching, f"no problem at {path}; got {[str(f) for f in findings]}"
    assert any(phrase in f.message for f in matching), [str(f) for f in matching]
    assert all(f.line is not None for f in matching)


@pytest.mark.parametrize("text", [pytest.param(good, id=name) for name, *_, good in CASES])
def test_rule_accepts(text):
    errors = [str(f) for f in problems(text) if f.severity == "error"]
    assert errors == []


def test_problem_line_numbers():
    text = "seed: 1\nclock:\n  duration: 2d\n  drain: -1h\n"
    (finding,) = problems(text)
    assert finding.file == "case.yaml"
    assert finding.line == 4
    assert str(finding).startswith("case.yaml:4: clock.drain:")


def test_short_fault_window_warns():
    text = "gateways:\n  faults:\n    - {kind: brownout, start: 1h, duration: 2m}\n"
    (warning,) = problems(text)
    assert warning.severity == "warning"
    assert warning.path == "gateways.faults[0].duration"
    assert "too short to rehearse" in warning.message


def test_long_fault_window_passes():
    text = "gateways:\n  faults:\n    - {kind: brownout, start: 1h, duration: 3h}\n"
    assert problems(text) == []


BROADCAST_AT = """
clock: {start: 2026-11-26T00:00:00Z, duration: DURATION, drain: 2h}
journeys:
  - {name: launch, kind: broadcast, at: AT, link: shop://deals}
"""


@pytest.mark.parametrize(
    ("duration", "at", "phrase"),
    [
        ("12h", "2026-11-26T16:00:00Z", "16h into the run, after the run ends"),
        ("17h", "2026-11-26T16:00:00Z", "16h into the run, within clock.drain of the end"),
        ("1d", "2026-11-25T16:00:00Z", "8h before clock.start"),
    ],
)
def test_broadcast_outside_judged_run_warns(duration, at, phrase):
    text = BROADCAST_AT.replace("DURATION", duration).replace("AT", at)
    (warning,) = problems(text)
    assert warning.severity == "warning"
    assert warning.path == "journeys[0].at"
    assert phrase in warning.message


def test_broadcast_inside_judged_run_passes():
    text = BROADCAST_AT.replace("DURATION", "1d").replace("AT", "2026-11-26T16:00:00Z")
    assert problems(text) == []


def test_yaml_syntax_error_has_line():
    (finding,) = problems("seed: 1\nclock: {duration: 2d\n")
    assert finding.line is not None
    assert "invalid YAML" in finding.message


def test_top_level_must_be_mapping():
    (finding,) = problems("- 1\n- 2\n")
    assert "mapping of sections" in finding.message


def test_all_problems_listed_at_once():
    text = "permision: {}\nreactions:\n  open: {ios: 1.4}\njourneys:\n  - name: a\n" \
           "    trigger: {event: add_to_crt}\n"  # fmt: skip
    paths = {f.path for f in problems(text)}
    assert paths == {"permision", "reactions.open.ios", "journeys[0].trigger.event"}


def test_platform_shares_name_the_default_kept():
    (finding,) = problems("population:\n  platforms: {ios: 1.0}\n")
    assert finding.path == "population.platforms"
    assert "shares sum to 1.5 (ios 1, android 0.5)" in finding.message
    assert "give it 0 to leave it out" in finding.message


WARNINGS = [
    ("run-within-drain", "clock: {duration: 2h, drain: 2h}\n", "clock.duration",
     "the report judges no trigger"),
    ("delay-past-judged-run", "clock: {duration: 1d, drain: 2h}\njourneys:\n"
     "  - {name: a, trigger: {event: added_to_cart}, delay: 22h}\n", "journeys[0].delay",
     "no trigger of this journey is judged"),
    ("spike-before-run", "clock: {start: 2026-12-04T00:00:00Z, duration: 1d}\npopulation:\n"
     "  arrival:\n    spikes: [{at: 2026-11-27T09:00:00, duration: 1h}]\n",
     "population.arrival.spikes[0].at", "outside the run"),
    ("fault-after-run", "clock: {duration: 1d}\ngateways:\n  faults:\n"
     "    - {kind: brownout, start: 30h, duration: 3h}\n", "gateways.faults[0].start",
     "never applies"),
    ("trigger-never-reached", "funnel:\n  transitions:\n"
     "    added_to_cart: {checkout_started: 0.5}\n", "journeys[0].trigger.event",
     "no session reaches added_to_cart"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "path", "phrase"),
    [pytest.param(text, path, phrase, id=name) for name, text, path, phrase in WARNINGS],
)
def test_setting_that_rehearses_nothing_warns(text, path, phrase):
    (warning,) = problems(text)
    assert warning.severity == "warning"
    assert warning.path == path
    assert phrase in warning.message


def test_spike_inside_run_in_one_zone_passes():
    # 22:00 local on the eve is 03:00 UTC in New York, inside the run, and 21:00 UTC in Berlin.
    text = ("clock: {start: 2026-12-04T00:00:00Z, duration: 6h}\npopulation:\n"
            "  timezones: {America/New_York: 0.5, Europe/Berlin: 0.5}\n  arrival:\n"
            "    spikes: [{at: 2026-12-03T22:00:00, duration: 1h}]\n")  # fmt: skip
    assert problems(text) == []


def test_bad_clock_start_gives_one_problem():
    # The broadcast is not judged against the default start that clock.start fell back to.
    text = (
        "clock: {start: yesterday}\njourneys:\n"
        "  - {name: b, kind: broadcast, at: 2026-12-10, link: shop://deals}\n"
    )
    (finding,) = problems(text)
    assert finding.path == "clock.start"


def test_bad_broadcast_time_gives_one_problem():
    text = "journeys:\n  - {name: b, kind: broadcast, at: tomorrow, link: shop://deals}\n"
    (finding,) = problems(text)
    assert finding.path == "journeys[0].at"
    assert "invalid date and time 'tomorrow'" in finding.message


def test_problems_follow_file_order():
    # The rules find the gate problem before the clock warning; the list follows the file.
    text = "gates: ['nothing >= 1']\nclock: {duration: 1h, drain: 2h}\n"
    assert [finding.line for finding in problems(text)] == [1, 2]


def test_bare_number_duration_warns():
    text = "journeys:\n  - name: a\n    trigger: {event: added_to_cart}\n    delay: 90\n"

    (finding,) = problems(text)

    assert finding.severity == "warning"
    assert finding.path == "journeys[0].delay"
    assert "reads as 90 seconds: write 90s to keep that" in finding.message
    assert problems(text.replace("delay: 90", "delay: 90s")) == []


@pytest.mark.parametrize(
    ("overrides", "fault"),
    [
        (("population.platforms={ios: 0.0, android: 1.0}", "sdk_faults.event_name_drift=0.5"),
         "event_name_drift"),
        (("population.platforms={ios: 1.0, android: 0.0}",
          "sdk_faults.late_background_rotation=0.5"), "late_background_rotation"),
        (("identity.logout=0", "population.shared_device=0", "sdk_faults.logout_keeps_device=1"),
         "logout_keeps_device"),
    ],
)  # fmt: skip
def test_impossible_fault_warns(overrides, fault):
    (finding,) = problems("seed: 1\n", overrides)

    assert finding.severity == "warning"
    assert finding.path == f"sdk_faults.{fault}"
    assert finding.message.startswith("this fault never happens in this run: ")


def test_fault_at_top_level_names_its_section():
    (finding,) = problems("event_name_drift: 0.5\n")

    assert "it belongs in the sdk_faults section, as sdk_faults.event_name_drift" in (
        finding.message
    )
