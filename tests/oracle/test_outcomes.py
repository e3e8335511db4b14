"""Each primary outcome, from a hand-built ledger of one shopper's actions."""

from __future__ import annotations

from sim.oracle.judge import judge_run
from sim.oracle.outcomes import OUTCOMES, late_tolerance
from sim.oracle.sdk_errors import SdkErrors
from tests.oracle.ledgers import DELAY, QUIET_SCENARIO_TEXT, SCENARIO, Story, apns_token

CART_AT = 1000.0
DUE = CART_AT + DELAY


def outcome_of(story: Story, tmp_path, scenario: str = SCENARIO, trigger_id="cart_recovery:c1-1"):
    result = judge_run(story.write(tmp_path, scenario))
    rows = {row.trigger_id: row for row in result.rows}
    return rows[trigger_id], result


def test_converted_before_delay(tmp_path):
    story = Story()
    story.shopper()
    story.add_to_cart(CART_AT)
    story.order(CART_AT + 600)
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "converted_before_delay"


def test_no_permission(tmp_path):
    story = Story()
    story.shopper(permission="denied")
    story.add_to_cart(CART_AT)
    story.abandon(CART_AT + 60)
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "no_permission"


def _uninstalled_story() -> tuple[Story, str]:
    """A shopper whose app is uninstalled after the cart; the token dies with it."""
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.record("uninstall", CART_AT + 100, device="d1-0", platform="ios", anonymous_id="anon-1")
    story.record("token_died", CART_AT + 100, device="d1-0", token=token, reason="uninstall",
                 reported_at=CART_AT + 9000)  # fmt: skip
    return story, token


def test_no_device_after_uninstall(tmp_path):
    story, _ = _uninstalled_story()
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "no_device"
    assert row.detail == ""


def test_no_device_names_pushes_sent_anyway(tmp_path):
    # The push service accepts pushes to the dead token until it reports the token gone.
    story, token = _uninstalled_story()
    story.push(DUE, token, live=False)

    row, _ = outcome_of(story, tmp_path)

    assert row.outcome == "no_device"
    assert row.detail == "1 push(es) sent anyway, to tokens no installed app held"


CAPPED_SCENARIO = SCENARIO.replace("frequency_cap: {count: 0, per: 1d}",
                                   "frequency_cap: {count: 1, per: 1d}")  # fmt: skip


def test_capped_second_cart(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT, "c1-1")
    story.push(DUE, token, "c1-1")
    story.add_to_cart(CART_AT + 5000, "c1-2")
    row, result = outcome_of(story, tmp_path, CAPPED_SCENARIO, "cart_recovery:c1-2")
    assert row.outcome == "capped"
    assert result.journeys[0].outcomes["delivered"] == 1


QUIET_SCENARIO = QUIET_SCENARIO_TEXT


def test_quiet_hours_skip(tmp_path):
    # Due at 00:47 UTC, inside quiet hours, and the backend skipped the send.
    story = Story()
    story.shopper()
    story.add_to_cart(CART_AT)
    row, _ = outcome_of(story, tmp_path, QUIET_SCENARIO)
    assert row.outcome == "quiet_hours"


def test_quiet_hours_deferred_push_on_time(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.push(8 * 3600.0 + 5, token)
    row, _ = outcome_of(story, tmp_path, QUIET_SCENARIO)
    assert row.due_at == 8 * 3600.0
    assert row.outcome == "delivered"


def test_quiet_hours_push_sent_early(tmp_path):
    # Due at 00:47 UTC inside quiet hours, which end at 08:00; the backend pushed at 01:00.
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.push(3600.0, token)

    row, _ = outcome_of(story, tmp_path, QUIET_SCENARIO)

    assert row.due_at == 8 * 3600.0
    assert row.outcome == "sent_early"
    assert row.detail == "first push 25200 s before due, inside the shopper's quiet hours"


def test_push_before_delay_sent_early(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    # A backend that waits one minute instead of the journey's 30.
    story.push(CART_AT + 60, token)

    row, result = outcome_of(story, tmp_path)

    assert row.outcome == "sent_early"
    assert row.detail == "first push 1740 s before due"
    assert row.lateness_s == -1740
    assert result.metrics["failure_rate"] == 1.0


def test_push_early_within_tolerance_counts(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.push(DUE - late_tolerance_for_test() + 1, token)

    row, _ = outcome_of(story, tmp_path)

    assert row.outcome == "delivered"


def test_early_then_late_push_sent_late(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.push(CART_AT + 60, token)
    story.push(DUE + 3600, token)

    row, _ = outcome_of(story, tmp_path)

    assert row.outcome == "sent_late"
    assert row.detail == "first push 3600 s after due"


def test_stranded_anonymous(tmp_path):
    story = Story()
    token = story.shopper(user_id=None)
    # Identify without registering the token again: it stays on the anonymous profile.
    story.call("identify", 500.0, "d1-0", "p1-0", user_id="p1-0")
    story.add_to_cart(CART_AT)
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "stranded_anonymous"
    assert token[:12] in row.detail


def test_deleted_token_is_not_stranded(tmp_path):
    # The token was registered anonymously and never on the person, then a logout deleted it:
    # it sits on no profile, so the trigger reached a profile without a device.
    story = Story()
    token = story.shopper(user_id=None)
    story.call("identify", 100.0, "d1-0", "p1-0", user_id="p1-0")
    story.call("delete_token", 200.0, "d1-0", "p1-0", user_id="p1-0", token=token)
    story.call("identify", 300.0, "d1-0", "p1-0", user_id="p1-0")
    story.add_to_cart(CART_AT)

    row, _ = outcome_of(story, tmp_path)

    assert row.outcome == "events_without_device"
    assert row.detail == (
        f"trigger on user:p1-0; the app deleted token {token[:12]}… from its profile at 200 s, "
        "as a logout does, and did not register it again"
    )


def test_stale_token_accepted_after_death(tmp_path):
    story = Story()
    old = story.shopper(token=1)
    story.record("token_died", 500.0, device="d1-0", token=old, reason="os_update",
                 reported_at=30000.0)  # fmt: skip
    story.record("token_issued", 500.0, device="d1-0", token=apns_token(2), platform="ios",
                 reason="os_update")  # fmt: skip
    story.call("register_token", 500.0, "d1-0", "p1-0", user_id="p1-0", token=apns_token(2))
    story.add_to_cart(CART_AT)
    story.push(DUE, old, live=False)
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "stale_token"


def test_stale_token_unregistered(tmp_path):
    story = Story()
    old = story.shopper(token=1)
    story.record("token_died", 500.0, device="d1-0", token=old, reason="os_update",
                 reported_at=600.0)  # fmt: skip
    story.record("token_issued", 500.0, device="d1-0", token=apns_token(2), platform="ios",
                 reason="os_update")  # fmt: skip
    story.call("register_token", 500.0, "d1-0", "p1-0", user_id="p1-0", token=apns_token(2))
    story.add_to_cart(CART_AT)
    story.push(DUE, old, status=410, reason="Unregistered", live=False)
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "stale_token"


def test_events_without_device(tmp_path):
    story = Story()
    story.shopper()
    # The SDK sent the trigger as anonymous right after identify.
    story.add_to_cart(CART_AT, user_id=None)
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "events_without_device"


def test_events_without_permitted_device(tmp_path):
    # The identified phone has push turned off. The second phone allows it but browses
    # anonymously, so its token never reaches the person's profile, as with the Track API.
    story = Story()
    story.shopper(permission="denied")
    story.shopper(device="d1-1", token=2, user_id=None, register=False, anonymous_id="anon-2")
    story.add_to_cart(CART_AT)
    story.abandon(CART_AT + 60)

    row, _ = outcome_of(story, tmp_path)

    assert row.outcome == "events_without_device"


def test_not_sent_to_the_other_apns_environment(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.abandon(CART_AT + 60)
    # The backend sent the store build's token to the sandbox host twice.
    story.push(DUE, token, status=400, reason="BadDeviceToken")
    story.push(DUE + 5, token, status=400, reason="BadDeviceToken")
    # A token no shopper held gets BadDeviceToken for being unknown, not for its environment.
    story.push(DUE + 9, apns_token(99), status=400, reason="BadDeviceToken")

    row, result = outcome_of(story, tmp_path)

    assert row.outcome == "not_sent"
    assert "400 BadDeviceToken (production token sent to the sandbox host)" in row.detail
    assert result.metrics["wrong_environment_pushes"] == 2
    note = result.wrong_environment_note()
    assert note is not None
    assert "2 push(es) took store builds' tokens to the sandbox host" in note
    assert "api.push.apple.com" in note


def test_development_build_token_sent_to_production(tmp_path):
    story = Story()
    story.shopper(register=False)
    sandbox = apns_token(7)
    story.record("token_issued", 10.0, device="d1-0", token=sandbox, platform="ios",
                 reason="os_update", environment="sandbox")  # fmt: skip
    story.add_to_cart(CART_AT)
    story.abandon(CART_AT + 60)
    story.push(DUE, sandbox, status=400, reason="BadDeviceToken")

    _, result = outcome_of(story, tmp_path)

    assert result.wrong_environment == {"sandbox": 1}
    assert "1 push(es) took development builds' tokens" in (result.wrong_environment_note() or "")


def test_no_environment_note_without_refusals(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.abandon(CART_AT + 60)
    story.push(DUE, token)

    _, result = outcome_of(story, tmp_path)

    assert result.metrics["wrong_environment_pushes"] == 0
    assert result.wrong_environment_note() is None


def test_drifted_trigger_names_its_fault(tmp_path):
    story = Story()
    story.shopper()
    story.record("cart", CART_AT, cart_id="c1-1", device="d1-0", person="p1-0", origin="organic")
    story.call("track", CART_AT, "d1-0", "p1-0", user_id="p1-0", event="add_to_cart",
               properties={"sku": "SKU-1", "qty": 1, "cart_id": "c1-1"},
               fault="event_name_drift")  # fmt: skip
    story.abandon(CART_AT + 60)

    row, result = outcome_of(story, tmp_path)

    assert row.outcome == "not_sent"
    assert row.detail == (
        "no push for this trigger; SDK fault on the trigger call: the app sent it as "
        "add_to_cart, a name the journey's trigger does not match unless the backend maps it "
        "to added_to_cart"
    )
    assert result.failures_by_fault == {"event_name_drift": 1}
    assert "event_name_drift 1" in (result.fault_note() or "")


def test_not_sent(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.push(DUE, token, status=503, reason="ServiceUnavailable")
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "not_sent"
    assert "503" in row.detail


def test_sent_late(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.push(DUE + late_tolerance_for_test() + 30, token)
    row, result = outcome_of(story, tmp_path)
    assert row.outcome == "sent_late"
    assert row.lateness_s == late_tolerance_for_test() + 30
    assert result.lateness_s["max"] == late_tolerance_for_test() + 30


def test_driver_lag_not_counted_late(tmp_path):
    story = Story()
    token = story.shopper()
    # The driver sent the trigger 0.5 wall s late: 720 simulated s at time scale 1440.
    story.add_to_cart(CART_AT, lag_ms=500.0)
    story.push(DUE + late_tolerance_for_test() + 700, token)
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "delivered"
    assert row.deadline_at == DUE + late_tolerance_for_test() + 720


def late_tolerance_for_test() -> float:
    from sim.scenario import load_scenario

    return late_tolerance(load_scenario(text=SCENARIO).scenario.journeys[0])


def test_delivered_not_displayed(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.push(DUE + 5, token)
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "delivered"
    assert row.lateness_s == 5


def test_displayed(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    delivery = story.push(DUE, token)
    story.react(DUE, delivery, "received")
    story.react(DUE, delivery, "displayed")
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "displayed"


def test_opened(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    delivery = story.push(DUE, token)
    story.react(DUE, delivery, "displayed")
    story.react(DUE + 300, delivery, "opened")
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "opened"


def converted_story(buy_anyway_at) -> Story:
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.abandon(CART_AT + 60, buy_anyway_at=buy_anyway_at)
    delivery = story.push(DUE, token)
    story.react(DUE, delivery, "displayed")
    story.react(DUE + 300, delivery, "opened")
    story.order(DUE + 300, via="push")
    story.react(DUE + 300, delivery, "converted", detail="c1-1")
    return story


def test_converted_incremental(tmp_path):
    row, result = outcome_of(converted_story(None), tmp_path)
    assert row.outcome == "converted"
    assert row.conversion == "incremental"
    assert result.journeys[0].conversions["incremental"] == 1
    assert result.problems["push_after_conversion"].count == 0


def test_converted_pulled_forward(tmp_path):
    row, _ = outcome_of(converted_story(50000.0), tmp_path)
    assert row.conversion == "pulled_forward"


def test_trigger_near_end_excluded(tmp_path):
    story = Story()
    story.shopper()
    # Due at 86400 - 3600 + 1, so the due time plus the one-hour drain passes the end.
    story.add_to_cart(86400.0 - 3600.0 - DELAY + 1, "c1-9")
    story.add_to_cart(86400.0 - 3600.0 - DELAY - 1, "c1-8")
    result = judge_run(story.write(tmp_path))
    journey = result.journeys[0]
    assert journey.triggers == 2
    assert journey.excluded == 1
    assert journey.eligible == 1
    rows = {row.trigger_id: row.outcome for row in result.rows}
    assert rows["cart_recovery:c1-9"] == "excluded_near_end"
    assert rows["cart_recovery:c1-8"] == "not_sent"


def test_excluded_trigger_lists_its_push(tmp_path):
    story = Story()
    token = story.shopper()
    due = 86400.0 - 3600.0 + 1
    story.add_to_cart(due - DELAY, "c1-9")
    delivery_id = story.push(due, token, cart="c1-9")
    result = judge_run(story.write(tmp_path))
    [row] = result.rows
    assert row.outcome == "excluded_near_end"
    assert row.accepted_count == 1
    assert row.delivery_ids == [delivery_id]


def test_dropped_trigger_counted_apart(tmp_path):
    story = Story()
    story.shopper()
    story.add_to_cart(CART_AT, "c1-1", status="dropped")
    story.add_to_cart(CART_AT, "c1-2")
    result = judge_run(story.write(tmp_path))
    journey = result.journeys[0]
    assert journey.trigger_events_dropped == 1
    assert [row.trigger_id for row in result.rows] == ["cart_recovery:c1-2"]


def test_first_trigger_per_cart_only(tmp_path):
    story = Story()
    story.shopper()
    story.add_to_cart(CART_AT, "c1-1")
    story.call("track", CART_AT + 30, "d1-0", "p1-0", user_id="p1-0", event="added_to_cart",
               properties={"sku": "SKU-2", "qty": 1, "cart_id": "c1-1"})  # fmt: skip
    result = judge_run(story.write(tmp_path))
    assert len(result.rows) == 1
    assert result.rows[0].trigger_at == CART_AT


def test_waterfall_adds_up(tmp_path):
    story = Story()
    token = story.shopper()
    for n in range(1, 6):
        story.add_to_cart(CART_AT * n, f"c1-{n}")
    story.order(CART_AT + 100, "c1-1")
    story.push(CART_AT * 2 + DELAY, token, "c1-2")
    result = judge_run(story.write(tmp_path))
    journey = result.journeys[0]
    assert sum(journey.outcomes[name] for name in OUTCOMES) == journey.eligible
    steps = dict(journey.waterfall())
    assert steps["eligible"] == 5
    assert steps["push expected"] == 4
    assert steps["delivered"] == 1
    assert result.metrics["delivery_rate"] == 0.25


def test_anonymous_trigger_merged_by_identify(tmp_path):
    story = Story()
    token = story.shopper(user_id=None)
    story.add_to_cart(CART_AT, user_id=None)
    # A guest checkout identifies the shopper: the anonymous cart joins their profile.
    story.call("identify", CART_AT + 200, "d1-0", "p1-0", user_id="p1-0")
    story.call("register_token", CART_AT + 200, "d1-0", "p1-0", user_id="p1-0", token=token)
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "not_sent"


def test_push_to_handed_over_phone(tmp_path):
    story = Story()
    token = story.shopper()
    story.shopper(device="d2-0", person="p1-0", token=2)
    story.add_to_cart(CART_AT)
    # The first phone changes hands with its token; the shopper keeps using the second phone.
    story.record("device_user", CART_AT + 100, device="d1-0", person="p1-5")
    story.push(DUE, token)
    row, _ = outcome_of(story, tmp_path)
    assert row.outcome == "not_sent"
    assert "p1-5" in row.detail


def test_stitching_hint_under_track_api(tmp_path):
    story = Story()
    story.shopper()
    story.add_to_cart(CART_AT, user_id=None)
    _, result = outcome_of(story, tmp_path)

    hint = result.stitching_hint()

    assert result.protocol == "track_v1"
    assert hint.startswith(
        "events_without_device is the commonest failure (1 of 1 failed triggers): the Track API"
    )
    assert "--set target.protocol=cdp_batch" in hint
    result.protocol = "cdp_batch"
    assert result.stitching_hint() is None

    # With most SDK calls rejected, the missing devices come from the rejections instead.
    result.protocol = "track_v1"
    result.sdk_errors = SdkErrors(sent=100, failed=100, error_rate=1.0)
    assert result.stitching_hint() is None


def test_partial_run_excludes_triggers_due_after_stop(tmp_path):
    # The model stopped at simulated second 5,000. The push was due at 2,800, and its hour of
    # drain runs past the stop, so a partial run cannot judge it.
    story = Story()
    story.shopper()
    story.add_to_cart(CART_AT)
    story.call("track", 5000.0, "d1-0", "p1-0", user_id="p1-0", event="product_viewed")

    whole = judge_run(story.write(tmp_path / "whole"))
    partial_inputs = story.write(tmp_path / "partial")
    partial_inputs.partial = True
    partial = judge_run(partial_inputs)

    assert [row.outcome for row in whole.rows] == ["not_sent"]
    assert [row.outcome for row in partial.rows] == ["excluded_near_end"]


def test_partial_run_end_ignores_records_written_ahead(tmp_path):
    # As above, but the ledger also contains a second phone's device_user record written
    # ahead, and calls given up at the stop that were due later. Neither moves the run's end.
    story = Story()
    story.shopper()
    story.add_to_cart(CART_AT)
    story.call("track", 5000.0, "d1-0", "p1-0", user_id="p1-0", event="product_viewed")
    story.record("device_user", 150_000.0, device="d1-1", person="p1-0")
    story.call("track", 90_000.0, "d1-0", "p1-0", user_id="p1-0", event="product_viewed",
               status="unsent")  # fmt: skip
    story.call("track", 95_000.0, "d1-0", "p1-0", user_id="p1-0", event="product_viewed",
               status="dropped")  # fmt: skip
    inputs = story.write(tmp_path)
    inputs.partial = True

    result = judge_run(inputs)

    assert [row.outcome for row in result.rows] == ["excluded_near_end"]
    assert result.reached == 5000.0
    # The unsent call is no part of the load the generator offered.
    assert result.generator.calls_by_status["unsent"] == 1
    assert result.generator.drop_share == 1 / 5


def test_unmerged_anonymous_trigger_is_named(tmp_path):
    # The cart was added anonymously, and the shopper identified before the push was due. The
    # backend kept the cart on the anonymous profile, so it sent nothing.
    story = Story()
    token = story.shopper(user_id=None)
    story.add_to_cart(CART_AT, user_id=None)
    story.abandon(CART_AT + 60)
    # The SDK identifies and registers the token again on the identified profile.
    story.call("identify", CART_AT + 300, "d1-0", "p1-0", user_id="p1-0")
    story.call("register_token", CART_AT + 300, "d1-0", "p1-0", user_id="p1-0", token=token,
               attributes={"platform": "ios", "push_enabled": True})  # fmt: skip

    row, result = outcome_of(story, tmp_path)

    assert row.outcome == "not_sent"
    assert "no push for this trigger" in row.detail
    assert "made anonymously as anon-1, which identified as user:p1-0 well before" in row.detail
    assert result.metrics["unsent_after_identify"] == 1


def test_drifted_anonymous_trigger_is_not_unmerged(tmp_path):
    # The same story, but the app sent the cart under its drifted name: no backend that merges
    # could have started the journey, so the merge metric leaves it out.
    story = Story()
    token = story.shopper(user_id=None)
    story.add_to_cart(CART_AT, user_id=None, fault="event_name_drift")
    story.calls_renamed("added_to_cart", "add_to_cart")
    story.abandon(CART_AT + 60)
    story.call("identify", CART_AT + 300, "d1-0", "p1-0", user_id="p1-0")
    story.call("register_token", CART_AT + 300, "d1-0", "p1-0", user_id="p1-0", token=token,
               attributes={"platform": "ios", "push_enabled": True})  # fmt: skip

    row, result = outcome_of(story, tmp_path)

    assert row.outcome == "not_sent"
    assert "SDK fault on the trigger call" in row.detail
    assert result.metrics["unsent_after_identify"] == 0


def test_identified_trigger_not_sent_is_not_unmerged(tmp_path):
    story = Story()
    story.shopper()
    story.add_to_cart(CART_AT)
    story.abandon(CART_AT + 60)

    row, result = outcome_of(story, tmp_path)

    assert row.outcome == "not_sent"
    assert row.detail == "no push for this trigger"
    assert result.metrics["unsent_after_identify"] == 0


def test_identify_just_before_due_is_not_blamed(tmp_path):
    # The identify comes 30 s before the due time, inside the 180 s late tolerance, so a backend
    # that read the anonymous profile a moment earlier is not charged with a missing merge.
    story = Story()
    token = story.shopper(user_id=None)
    story.add_to_cart(CART_AT, user_id=None)
    story.abandon(CART_AT + 60)
    story.call("identify", DUE - 30, "d1-0", "p1-0", user_id="p1-0")
    story.call("register_token", DUE - 30, "d1-0", "p1-0", user_id="p1-0", token=token,
               attributes={"platform": "ios", "push_enabled": True})  # fmt: skip

    row, result = outcome_of(story, tmp_path)

    assert row.outcome == "not_sent"
    assert "made anonymously" not in row.detail
    assert result.metrics["unsent_after_identify"] == 0
