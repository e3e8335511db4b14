"""Cross-row problems, backend conduct, generator health, reach and gates from hand-built runs."""

from __future__ import annotations

import sqlite3

import pytest

from reports.html import render
from sim.oracle.judge import judge_run
from sim.oracle.reach import GRID_POINTS
from tests.oracle.ledgers import DELAY, SCENARIO, WALL_T0, Story, apns_token

CART_AT = 1000.0
DUE = CART_AT + DELAY


def test_wrong_person_on_shared_device(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    # The other person on the shared phone takes it before the push arrives.
    story.record("device_user", DUE - 100, device="d1-0", person="p1-1")
    delivery = story.push(DUE, token)
    story.react(DUE, delivery, "displayed", person="p1-1")
    result = judge_run(story.write(tmp_path))
    problem = result.problems["wrong_person"]
    assert problem.count == 1
    assert delivery in problem.examples[0]
    assert result.metrics["wrong_person_pushes"] == 1


def test_right_person_is_no_problem(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    delivery = story.push(DUE, token)
    story.react(DUE, delivery, "displayed")
    result = judge_run(story.write(tmp_path))
    assert result.problems["wrong_person"].count == 0


def test_duplicate_delivery(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.push(DUE, token)
    story.push(DUE + 60, token)
    result = judge_run(story.write(tmp_path))
    assert result.problems["duplicate_delivery"].count == 1


def test_apns_retry_same_id_not_duplicate(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.push(DUE, token, message_id="apns-1")
    story.push(DUE + 1, token, message_id="apns-1")
    result = judge_run(story.write(tmp_path))
    assert result.problems["duplicate_delivery"].count == 0


def test_push_after_conversion(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.order(CART_AT + 600)
    story.push(DUE, token)
    result = judge_run(story.write(tmp_path))
    assert result.rows[0].outcome == "converted_before_delay"
    assert result.problems["push_after_conversion"].count == 1
    assert result.metrics["pushes_after_conversion"] == 1


def test_ungated_problem_named_on_console(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.order(CART_AT + 600)
    story.push(DUE, token)

    # The hand-built scenario gates wrong_person_pushes and delivery_rate, not this count.
    ungated = judge_run(story.write(tmp_path / "ungated")).ungated_problems_warning()
    gated_text = SCENARIO.replace("gates:\n", "gates:\n  - pushes_after_conversion == 0\n")
    gated = judge_run(story.write(tmp_path / "gated", gated_text)).ungated_problems_warning()

    assert ungated.startswith("no gate checks these, and none is zero: pushes_after_conversion 1.")
    assert "'pushes_after_conversion == 0'" in ungated
    assert gated is None


def test_push_after_dropped_exit_is_not_the_backends(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    # The driver fell behind and never sent order_completed, so the backend could not know.
    story.order(CART_AT + 600, status="dropped")
    story.push(DUE, token)
    result = judge_run(story.write(tmp_path))
    assert result.rows[0].outcome == "converted_before_delay"
    assert result.problems["push_after_conversion"].count == 0
    assert result.metrics["pushes_after_conversion"] == 0


def test_push_without_permission(tmp_path):
    story = Story()
    token = story.shopper(permission="denied")
    story.add_to_cart(CART_AT)
    story.push(DUE, token)
    result = judge_run(story.write(tmp_path))
    assert result.rows[0].outcome == "no_permission"
    assert result.problems["push_without_permission"].count == 1


def test_push_to_uninstalled_app_not_permission(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    # The app goes without its token dying, as when a reinstall will keep the token.
    story.record("uninstall", DUE - 60, device="d1-0", platform="ios", anonymous_id="anon-1")
    story.push(DUE, token)
    result = judge_run(story.write(tmp_path))
    assert result.problems["push_without_permission"].count == 0
    assert result.metrics["pushes_without_permission"] == 0


def test_retry_honours_retry_after(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    wall = WALL_T0 + DUE / 1440
    story.push(DUE, token, status=503, reason="UNAVAILABLE", retry_after=2, wall=wall,
               service="fcm")  # fmt: skip
    story.push(DUE + 10, token, wall=wall + 3.0)
    result = judge_run(story.write(tmp_path))
    conduct = result.conduct
    assert conduct.retryable_errors == 1
    assert conduct.retries == 1
    assert conduct.retries_before_retry_after == 0
    assert conduct.retries_without_backoff == 0


def test_retry_ignores_retry_after(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    wall = WALL_T0 + DUE / 1440
    story.push(DUE, token, status=429, reason="QUOTA_EXCEEDED", retry_after=5, wall=wall,
               service="fcm")  # fmt: skip
    story.push(DUE, token, wall=wall + 0.1, service="fcm")
    result = judge_run(story.write(tmp_path))
    conduct = result.conduct
    assert conduct.retries_before_retry_after == 1
    assert conduct.retries_without_backoff == 1
    assert result.metrics["retries_before_retry_after"] == 1


def test_apns_retry_judged_on_backoff_alone(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    wall = WALL_T0 + DUE / 1440
    # Apple documents no Retry-After, so a header the mock sent anyway is not held against the
    # backend; the one-second wait is a proper backoff.
    story.push(DUE, token, status=503, reason="ServiceUnavailable", retry_after=5, wall=wall)
    story.push(DUE, token, wall=wall + 1.0)
    conduct = judge_run(story.write(tmp_path)).conduct
    assert conduct.retries == 1
    assert conduct.retries_before_retry_after == 0
    assert conduct.retries_without_backoff == 0


def test_error_never_retried(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.push(DUE, token, status=503, reason="ServiceUnavailable")
    result = judge_run(story.write(tmp_path))
    assert result.conduct.errors_never_retried == 1


def test_send_after_unregistered(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT, "c1-1")
    story.add_to_cart(CART_AT + 5000, "c1-2")
    dead_ms = int((WALL_T0 + 500 / 1440) * 1000)
    story.push(DUE, token, "c1-1", status=410, reason="Unregistered", live=False,
               timestamp_ms=dead_ms)  # fmt: skip
    story.push(DUE + 5000, token, "c1-2", status=410, reason="Unregistered", live=False)
    result = judge_run(story.write(tmp_path))
    assert result.conduct.unregistered_responses == 2
    assert result.conduct.sends_after_unregistered == 1


def test_send_after_reregistration_allowed(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT, "c1-1")
    story.add_to_cart(CART_AT + 5000, "c1-2")
    dead_ms = int((WALL_T0 + 500 / 1440) * 1000)
    story.push(DUE, token, "c1-1", status=410, reason="Unregistered", timestamp_ms=dead_ms)
    story.call("register_token", DUE + 100, "d1-0", "p1-0", user_id="p1-0", token=token)
    story.push(DUE + 5000, token, "c1-2")
    result = judge_run(story.write(tmp_path))
    assert result.conduct.sends_after_unregistered == 0


def test_connection_count(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.push(DUE, token, connection="a")
    story.push(DUE + 1, token, connection="b")
    result = judge_run(story.write(tmp_path))
    assert result.conduct.connections == {"apns": 2}
    assert sum(result.series["new_connections"]) == 2


def test_generator_fell_behind(tmp_path):
    story = Story()
    story.shopper()
    story.add_to_cart(CART_AT, "c1-1", status="dropped")
    story.add_to_cart(CART_AT, "c1-2")
    result = judge_run(story.write(tmp_path))
    health = result.generator
    assert health.dropped == 1
    assert health.drop_share == 1 / 4
    assert health.fell_behind
    assert "cannot be trusted" in health.message


def test_generator_lag_percentiles(tmp_path):
    story = Story()
    story.shopper()
    for n in range(100):
        story.call("track", 10.0 + n, "d1-0", "p1-0", user_id="p1-0",
                   event="Application Opened", lag_ms=float(n))  # fmt: skip
    result = judge_run(story.write(tmp_path))
    assert result.generator.lag_ms["count"] == 100
    assert result.generator.lag_ms["max"] == 99.0
    assert not result.generator.fell_behind


def test_reach_anonymous_token_unreachable(tmp_path):
    story = Story()
    story.shopper(user_id=None)
    # The identify carries another anonymous id, so no merge moves the token to the person.
    story.call("identify", 500.0, "d1-0", "p1-0", user_id="p1-0", anonymous_id="anon-9")
    story.shopper(device="d2-0", person="p2-0", token=2, user_id="p2-0", anonymous_id="anon-2")
    result = judge_run(story.write(tmp_path))
    reach = result.reach
    assert len(reach.at) == GRID_POINTS
    # From the first sample after the identify on: both opted in, only p2-0 reachable.
    assert reach.opted_in[1] == 2
    assert reach.reachable[1] == 1
    assert reach.live_tokens[1] == 2
    assert result.metrics["reachable_share_min"] == 0.5


def test_reach_follows_a_merge(tmp_path):
    # The token was registered anonymously, and an identify with the same anonymous id merges
    # that profile, devices included, into the person.
    story = Story()
    story.shopper(user_id=None)
    story.call("identify", 500.0, "d1-0", "p1-0", user_id="p1-0")

    result = judge_run(story.write(tmp_path))

    assert result.reach.reachable[1] == 1
    assert result.metrics["reachable_share_min"] == 1.0


def test_reach_min_skips_tiny_samples(tmp_path):
    story = Story()
    # From the start, one opted-in shopper whose token never reaches the backend: share 0.0.
    story.shopper(register=False)
    # From midday on, 40 more shoppers, all reachable: 40 of 41.
    for number in range(2, 42):
        story.shopper(43_200.0, device=f"d{number}-0", person=f"p{number}-0", token=number,
                      user_id=f"p{number}-0", anonymous_id=f"anon-{number}")  # fmt: skip
    result = judge_run(story.write(tmp_path))
    reach = result.reach
    assert min(reach.share(i) for i in range(len(reach.at))) == 0.0
    assert max(reach.opted_in) == 41
    assert result.metrics["reachable_share_min"] == pytest.approx(40 / 41)
    # Counting every sample, the lone unreachable shopper of the morning would set it.
    assert reach.lowest_share(min_opted_in=1) == 0.0


def test_reach_counts_dead_registered_tokens(tmp_path):
    story = Story()
    token = story.shopper()
    story.record("token_died", 100.0, device="d1-0", token=token, reason="os_update",
                 reported_at=9000.0)  # fmt: skip
    story.record("token_issued", 100.0, device="d1-0", token=apns_token(7), platform="ios",
                 reason="os_update")  # fmt: skip
    result = judge_run(story.write(tmp_path))
    assert result.reach.dead_registered_tokens[-1] == 1
    assert result.reach.reachable[-1] == 0


def test_gates_pass_and_fail(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    story.push(DUE, token)
    result = judge_run(story.write(tmp_path))
    gates = {gate.metric: gate for gate in result.gates}
    assert gates["wrong_person_pushes"].passed
    assert gates["delivery_rate"].value == 1.0
    assert gates["delivery_rate"].passed
    assert result.gates_passed


def test_gate_without_value_fails(tmp_path):
    story = Story()
    story.shopper()
    result = judge_run(story.write(tmp_path))
    gates = {gate.metric: gate for gate in result.gates}
    assert gates["delivery_rate"].value is None
    assert not gates["delivery_rate"].passed
    assert "no value" in gates["delivery_rate"].note


def test_retry_named_by_gateway(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    wall = WALL_T0 + DUE / 1440
    story.push(DUE, token, status=503, reason="ServiceUnavailable", wall=wall)
    story.push(DUE, token, "c1-2", wall=wall + 2.0)
    story.rows[-1]["retry_of"] = 1
    result = judge_run(story.write(tmp_path))
    assert result.conduct.retries == 1
    assert result.conduct.errors_never_retried == 0


def test_each_retry_judged_against_previous_attempt(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    wall = WALL_T0 + DUE / 1440
    # Three attempts with one apns-id: the gateway names the first in both retries. The second
    # follows the first at once, and the third waits 2 s after the second.
    story.push(DUE, token, status=503, reason="ServiceUnavailable", wall=wall)
    story.push(DUE, token, status=503, reason="ServiceUnavailable", wall=wall + 0.01)
    story.rows[-1]["retry_of"] = 1
    story.push(DUE, token, wall=wall + 2.01)
    story.rows[-1]["retry_of"] = 1

    conduct = judge_run(story.write(tmp_path)).conduct

    assert conduct.retryable_errors == 2
    assert conduct.retries == 2
    assert conduct.errors_never_retried == 0
    assert conduct.retries_without_backoff == 1
    assert conduct.examples["retry_without_backoff"] == [
        "push request seq 2 sent 0.010 s after the error"
    ]


def test_wall_lateness_from_sent_wall(tmp_path):
    story = Story()
    token = story.shopper()
    story.add_to_cart(CART_AT)
    # The generator sent the trigger 2 wall seconds late; the push came 2 s after its due time.
    story.records[-1]["sent_wall"] = WALL_T0 + CART_AT / 1440 + 2.0
    story.push(DUE, token, wall=WALL_T0 + DUE / 1440 + 2.0)
    result = judge_run(story.write(tmp_path))
    assert abs(result.rows[0].lateness_wall_ms) < 1e-3


def test_one_push_per_phone_not_duplicate(tmp_path):
    story = Story()
    first = story.shopper()
    second = story.shopper(device="d2-0", token=2)
    story.add_to_cart(CART_AT)
    story.push(DUE, first)
    story.push(DUE, second)
    result = judge_run(story.write(tmp_path))
    assert result.problems["duplicate_delivery"].count == 0
    assert result.rows[0].outcome == "delivered"


def write_device_history(path, rows) -> None:
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE device_history (id INTEGER PRIMARY KEY, token TEXT NOT NULL, "
        "profile_id INTEGER NOT NULL, action TEXT NOT NULL, reason TEXT, at REAL NOT NULL)"
    )
    connection.executemany(
        "INSERT INTO device_history (token, profile_id, action, reason, at) VALUES (?, 1, ?, ?, ?)",
        rows,
    )
    connection.commit()
    connection.close()


def test_pruning_checked_against_timestamp(tmp_path):
    story = Story()
    early = story.shopper()
    late = story.shopper(device="d2-0", person="p2-0", token=2, user_id="p2-0")
    story.add_to_cart(CART_AT)
    died_wall = WALL_T0 + 500 / 1440
    answer_wall = WALL_T0 + DUE / 1440
    for token in (early, late):
        story.push(DUE, token, status=410, reason="Unregistered", live=False,
                   timestamp_ms=int(died_wall * 1000), wall=answer_wall)  # fmt: skip
    inputs = story.write(tmp_path)
    store = tmp_path / "backend.sqlite"
    write_device_history(
        store,
        [
            # Registered before the token died: pruning it is right.
            (early, "registered", None, died_wall - 10),
            (early, "pruned", "Unregistered", answer_wall + 0.1),
            # Registered again after it died: pruning it breaks the rule.
            (late, "registered", None, died_wall + 1.0),
            (late, "pruned", "Unregistered", answer_wall + 0.1),
        ],
    )
    inputs.store_path = store
    result = judge_run(inputs)
    conduct = result.conduct
    assert conduct.pruning_checked is True
    assert conduct.prunes_after_unregistered == 2
    assert conduct.prunes_against_timestamp == 1

    html = render(result, {}, [])
    assert "2 prunes after an APNs 410, 1 of them against its timestamp" in html
    assert "not checked" not in html


def write_devices(path, rows) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE device_history (id INTEGER PRIMARY KEY, token TEXT, "
                       "profile_id INTEGER, action TEXT, reason TEXT, at REAL)")  # fmt: skip
    connection.execute("CREATE TABLE devices (token TEXT PRIMARY KEY, status TEXT)")
    connection.executemany("INSERT INTO devices (token, status) VALUES (?, ?)", rows)
    connection.commit()
    connection.close()


def test_lost_device_tokens_counted(tmp_path):
    story = Story()
    kept = story.shopper()
    dropped = story.shopper(device="d2-0", person="p2-0", token=2, user_id="p2-0")
    missing = story.shopper(device="d3-0", person="p3-0", token=3, user_id="p3-0")
    inputs = story.write(tmp_path)
    store = tmp_path / "backend.sqlite"
    write_devices(store, [(kept, "active"), (dropped, "deleted")])
    inputs.store_path = store
    conduct = judge_run(inputs).conduct
    assert conduct.device_tokens_checked == 3
    assert conduct.device_tokens_lost == 2
    assert missing not in {kept, dropped}


def test_lost_device_tokens_need_store(tmp_path):
    story = Story()
    story.shopper()
    conduct = judge_run(story.write(tmp_path)).conduct
    assert conduct.device_tokens_lost is None
