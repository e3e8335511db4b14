"""The oracle on a modelled run with SDK faults and a backend that sends nothing.

Every trigger that expected a push is then a failure, and an independent replay of the truth
ledger decides which: stranded on an anonymous profile, events on a profile without the device, or
simply not sent. Fault labels play no part in the replay.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sim.formats.truth import read_records
from sim.oracle.judge import judge_run
from tests.oracle.modelled import SCENARIO, Flaws, run_model

# Guests who leave an email at checkout and log out at the end of the session leave their cart
# on a profile that no longer has the device.
FAULTY = SCENARIO.replace(
    "journeys:",
    "sdk_faults: {token_before_identify: 0.5, anonymous_track_after_identify: 1.0}\n"
    "identity: {logout: 0.5, guest_email_at_checkout: 0.9}\n"
    "journeys:",
)


def replay(truth_path: Path, delay: float, last_due: float) -> Counter:
    """Count failure outcomes of a run without pushes, from truth records alone."""
    records = sorted(read_records(truth_path), key=lambda r: (r["at"], r["group"], r["seq"]))
    counts: Counter = Counter()
    seen: set[str] = set()
    for call in records:
        if call["kind"] != "sdk_call" or call.get("event") != "added_to_cart":
            continue
        cart_id = call["properties"]["cart_id"]
        if cart_id in seen:
            continue
        seen.add(cart_id)
        due = call["at"] + delay
        if due > last_due or _ordered_by(records, cart_id, due):
            continue
        token = _showable_token(records, call["device"], due)
        if token is None:
            continue
        counts[_failure(records, call, token, due)] += 1
    return counts


def _ordered_by(records: list[dict], cart_id: str, due: float) -> bool:
    return any(r["kind"] == "order" and r["cart_id"] == cart_id and r["at"] <= due
               for r in records)  # fmt: skip


def _showable_token(records: list[dict], device: str, at: float) -> str | None:
    """Return the device's live token at ``at`` when the app is installed with permission."""
    installed, token, permission = False, None, None
    for record in records:
        if record["at"] > at:
            break
        if record.get("device") != device:
            continue
        if record["kind"] == "install":
            installed = True
        elif record["kind"] == "uninstall":
            installed, permission = False, None
        elif record["kind"] == "token_issued":
            token = record["token"]
        elif record["kind"] == "token_died" and record["token"] == token:
            token = None
        elif record["kind"] == "permission":
            permission = record["state"]
    return token if installed and permission == "granted" else None


def _merged_into(records: list[dict], holder, since: float, at: float):
    """Return the profile of a token at ``at``. An anonymous holder moves to the person of an
    identify of its anonymous id between ``since`` (the registration) and ``at``, since a merge
    moves devices."""
    if not isinstance(holder, tuple):
        return holder
    for r in records:
        if (r["kind"] == "sdk_call" and r["method"] == "identify"
                and r["anonymous_id"] == holder[1] and since <= r["at"] <= at):  # fmt: skip
            return r["user_id"]
    return holder


def _failure(records: list[dict], trigger: dict, token: str, due: float) -> str:
    profile = trigger["user_id"]
    if profile is None:
        # A later identify with the same anonymous id before the due time merges the cart.
        for r in records:
            if (r["kind"] == "sdk_call" and r["method"] == "identify"
                    and r["anonymous_id"] == trigger["anonymous_id"]
                    and trigger["at"] <= r["at"] <= due):  # fmt: skip
                profile = r["user_id"]
                break
    registered = [
        r for r in records
        if r["kind"] == "sdk_call" and r.get("token") == token and r["at"] <= due
        and r["method"] in ("register_token", "delete_token")
    ]  # fmt: skip

    # The token's profile after each registration and deletion. A delete removes the token
    # only from the profile it is sent for, which a merge may have moved the token to.
    holder, since = None, 0.0
    for r in registered:
        key = r["user_id"] or ("anonymous", r["anonymous_id"])
        if r["method"] == "register_token":
            holder, since = key, r["at"]
        elif _merged_into(records, holder, since, r["at"]) == key:
            holder = None

    registrations = [r for r in registered if r["method"] == "register_token"]
    anonymous_only = registrations and all(r["user_id"] is None for r in registrations)
    if profile is not None and anonymous_only and holder is not None:
        return "stranded_anonymous"
    wanted = profile or ("anonymous", trigger["anonymous_id"])
    return (
        "not_sent"
        if _merged_into(records, holder, since, due) == wanted
        else "events_without_device"
    )


def test_faulty_sdk_failures_match_replay(tmp_path):
    inputs, _ = run_model(tmp_path, Flaws(skip=1.0), FAULTY)
    result = judge_run(inputs)
    clock = inputs.scenario.clock
    expected = replay(inputs.truth_paths[0], inputs.scenario.journeys[0].delay,
                      clock.duration - clock.drain)  # fmt: skip
    outcomes = result.journeys[0].outcomes

    for outcome in ("stranded_anonymous", "events_without_device", "not_sent"):
        assert outcomes[outcome] == expected[outcome], outcome
    assert outcomes["stale_token"] == 0
    assert outcomes["sent_late"] == 0
    # The faults must have produced both stitching failures, or the test proves little.
    assert expected["stranded_anonymous"] > 0
    assert expected["events_without_device"] > 0
    assert result.metrics["delivery_rate"] == 0.0
