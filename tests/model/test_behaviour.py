"""Targeted behaviours on small runs: the prompt, tokens across reinstalls, and single faults."""

from __future__ import annotations

from collections import defaultdict

import pytest
from model_support import scenario_from

from sim.formats.truth import read_records
from sim.model.plan import run_plan

BASE = """
seed: 21
clock: {{duration: 2d}}
population: {{installs: 1500, multi_device: 0.2, shared_device: 0.2{population}}}
sessions: {{per_day: 3.0}}
identity: {{signup: 0.4, logout: 0.2}}
uninstall: {{reinstall: 0.8, reinstall_delay: {{median: 1h, sigma: 0.5}}}}
tokens:
  rotation: {{fcm_refresh: 20, os_update: 10, restore: 3}}
{extra}
"""


def _run(tmp_path, extra: str = "", population: str = ""):
    path = tmp_path / "truth.jsonl.gz"
    text = BASE.format(extra=extra, population=population)
    result = run_plan(scenario_from(text), truth_path=path)
    records = sorted(read_records(path), key=lambda r: (r["at"], r["group"], r["seq"]))
    return result.summary, records


def _calls(records, method=None):
    return [
        r for r in records if r["kind"] == "sdk_call" and (method is None or r["method"] == method)
    ]


def test_value_moment_prompt_follows_add(tmp_path):
    summary, records = _run(tmp_path, "permission: {prompt: value_moment}")
    adds = {
        (c["device"], c["at"])
        for c in _calls(records, "anonymous_track") + _calls(records)
        if c["event"] in ("added_to_cart", "add_to_cart")
    }
    prompts = [r for r in records if r["kind"] == "permission" and r["prompted"]]

    assert len(prompts) > 100
    for record in prompts:
        assert (record["device"], record["at"]) in adds, record


def test_old_android_is_never_prompted(tmp_path):
    population = ", platforms: {ios: 0.0, android: 1.0}, android_13_plus: 0.0"
    summary, _ = _run(tmp_path, population=population)
    android = summary["permission"]["android"]

    assert android["prompts"] == 0
    assert android["granted_without_prompt"] == summary["population"]["installs"]


def test_multi_device_people_have_two_devices(tmp_path):
    summary, records = _run(tmp_path)
    # A group's device index 1 is its first person's second phone.
    second_phones = {
        r["device"] for r in records if r["kind"] == "device_user" and r["device"].endswith("-1")
    }

    assert summary["population"]["multi_device_people"] == len(second_phones)
    assert len(second_phones) > 10


def test_reinstall_gets_new_anonymous_id(tmp_path):
    _, records = _run(tmp_path)
    ids = defaultdict(list)
    for record in records:
        if record["kind"] == "install":
            ids[record["device"]].append(record["anonymous_id"])
    reinstalled = [values for values in ids.values() if len(values) > 1]

    assert len(reinstalled) > 50
    for values in reinstalled:
        assert len(set(values)) == len(values)


def test_handover_keeps_token_and_logs_in(tmp_path):
    summary, records = _run(tmp_path, "sdk_faults: {handover_reinstall: 1.0}")
    died = [r for r in records if r["kind"] == "token_died"]
    handovers = summary["identity"]["identifies"].get("handover", 0)

    assert summary["faults"]["handover_reinstall"]["injected"] > 50
    assert all(r["reason"] not in ("uninstall", "reinstall") for r in died)
    assert handovers > 0
    assert summary["population"]["people"] > summary["population"]["groups"]


def test_token_before_identify_stays_anonymous(tmp_path):
    summary, records = _run(tmp_path, "sdk_faults: {token_before_identify: 1.0}")
    # Per device: the last registration as (token, user_id), and the token the fault froze.
    last: dict[str, tuple[str, str | None]] = {}
    frozen: dict[str, str] = {}
    identifies_after_anonymous = 0
    for record in records:
        device = record.get("device")
        if record["kind"] in ("token_issued", "uninstall"):
            frozen.pop(device, None)
            last.pop(device, None)
        elif record["kind"] == "sdk_call" and record["method"] == "register_token":
            assert frozen.get(device) != record["token"], record
            last[device] = (record["token"], record["user_id"])
        elif record["kind"] == "sdk_call" and record["method"] == "identify":
            if device in last and last[device][1] is None:
                frozen[device] = last[device][0]
                identifies_after_anonymous += 1

    injected = summary["faults"]["token_before_identify"]["injected"]
    assert injected > 50
    # Later identifies on a frozen device count here too, but are no new opportunity.
    assert identifies_after_anonymous >= injected


def test_late_rotation_waits_for_session(tmp_path):
    summary, records = _run(tmp_path, "sdk_faults: {late_background_rotation: 1.0}")
    rotation_times = {
        (r["device"], r["at"])
        for r in records
        if r["kind"] == "token_issued" and r["reason"] in ("fcm_refresh", "os_update", "restore")
    }
    registered_at_rotation = [
        c for c in _calls(records, "register_token") if (c["device"], c["at"]) in rotation_times
    ]
    opened = {
        (c["device"], c["at"]) for c in _calls(records) if c["event"] == "Application Opened"
    } | {
        (c["device"], c["at"])
        for c in _calls(records, "anonymous_track")
        if c["event"] == "Application Opened"
    }

    assert len(rotation_times) > 50
    for call in registered_at_rotation:
        assert (call["device"], call["at"]) in opened, call


@pytest.mark.parametrize("fault", ["logout_keeps_device"])
def test_logout_keeps_device_skips_delete(tmp_path, fault):
    summary, records = _run(tmp_path, f"sdk_faults: {{{fault}: 1.0}}")

    assert summary["faults"][fault]["injected"] > 20
    assert not _calls(records, "delete_token")


def test_reorders_repeat_ordered_products(tmp_path):
    extra = "funnel: {reorder: {probability: 1.0, mean_interval: 6h, shape: 4.0}}"
    summary, records = _run(tmp_path, extra)
    ordered: dict[str, set[str]] = defaultdict(set)
    cart_device = {r["cart_id"]: r["device"] for r in records if r["kind"] == "cart"}
    reorder_carts = {
        r["cart_id"] for r in records if r["kind"] == "cart" and r["origin"] == "reorder"
    }
    first_add: dict[str, str] = {}
    for record in records:
        if record["kind"] != "sdk_call" or not record["properties"]:
            continue
        cart_id = record["properties"].get("cart_id")
        if record["event"] in ("added_to_cart", "add_to_cart") and cart_id in reorder_carts:
            first_add.setdefault(cart_id, record["properties"]["sku"])
            assert first_add[cart_id] in ordered[record["device"]], record
        if record["event"] == "order_completed":
            ordered[cart_device[cart_id]] |= _skus_of(records, cart_id)

    assert summary["funnel"]["carts"].get("reorder", 0) > 50
    assert len(first_add) == len(reorder_carts)


def _skus_of(records, cart_id: str) -> set[str]:
    return {
        r["properties"]["sku"]
        for r in records
        if r["kind"] == "sdk_call"
        and r["event"] in ("added_to_cart", "add_to_cart")
        and r["properties"]["cart_id"] == cart_id
    }


def test_buy_anyway_orders_at_latent_time(tmp_path):
    extra = "reactions: {buy_anyway: {probability: 0.5, delay: {median: 2h, sigma: 0.5}}}"
    summary, records = _run(tmp_path, extra)
    latent = {r["cart_id"]: r["buy_anyway_at"] for r in records if r["kind"] == "latent"}
    orders = [r for r in records if r["kind"] == "order" and r["via"] == "buy_anyway"]

    assert len(orders) > 50
    for order in orders:
        due = latent[order["cart_id"]]
        assert due is not None
        # The return visit opens at the latent time and orders after two in-session gaps.
        assert due <= order["at"] < due + 3600.0, order
