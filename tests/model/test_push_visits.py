"""Push visits: an open whose link names no cart sends the shopper browsing through the funnel."""

from __future__ import annotations

from collections import Counter

import pytest
from model_support import scenario_from

from sim.formats.truth import read_records
from sim.model.plan import run_plan
from sim.model.ports import Delivery

SCENARIO = """
seed: 31
clock: {duration: 2d}
population: {installs: 2500}
reactions:
  open: {ios: 0.5, android: 0.5}
  time_to_open: {ios: {median: 2m, sigma: 0.5}, android: {median: 2m, sigma: 0.5}}
  broken_link: 0.1
sdk_faults:
  event_name_drift: 0.5
  sku_as_object: 0.5
"""

# Simulated seconds between broadcasts to every current token.
BROADCAST_EVERY = 6 * 3600.0


def _broadcaster(world):
    """Send a deals push to every phone's current token every six simulated hours."""

    def run():
        number = 0
        while True:
            yield world.env.timeout(BROADCAST_EVERY)
            tokens = [device.token for group in world.groups.values()
                      for device in group.devices if device.token]  # fmt: skip
            for token in tokens:
                number += 1
                payload = {"aps": {"alert": "Deals are live"}, "link": "shop://deals"}
                world.deliver(Delivery(f"b-{number}", token, payload))

    world.env.process(run())


def _plan(tmp_path, name: str, broadcast: bool) -> tuple[dict, list[dict]]:
    truth_path = tmp_path / f"{name}.jsonl.gz"
    result = run_plan(
        scenario_from(SCENARIO),
        truth_path=truth_path,
        before_run=_broadcaster if broadcast else None,
    )
    return result.summary, list(read_records(truth_path))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("push_visits")
    return _plan(tmp_path, "quiet", False), _plan(tmp_path, "broadcast", True)


def _organic(records: list[dict]) -> dict[str, list[tuple]]:
    """Return the carts, latent draws and orders that organic behaviour made."""
    visit_carts = {r["cart_id"] for r in records
                   if r["kind"] == "cart" and r["origin"] == "push_visit"}  # fmt: skip
    found: dict[str, list[tuple]] = {"cart": [], "latent": [], "order": []}
    for record in records:
        if record["kind"] in found and record["cart_id"] not in visit_carts:
            found[record["kind"]].append(
                tuple(value for key, value in sorted(record.items()) if key != "seq")
            )
    return found


def test_visits_order_through_the_funnel(runs):
    _, (summary, records) = runs
    steps = Counter(r["step"] for r in records if r["kind"] == "reaction")
    visit_carts = [r for r in records if r["kind"] == "cart" and r["origin"] == "push_visit"]
    push_orders = [r for r in records if r["kind"] == "order" and r["via"] == "push"]

    assert steps["opened"] > 500
    assert visit_carts, "a visit adds to a cart of its own"
    assert all(cart["cart_id"].split("-")[1].startswith("p") for cart in visit_carts)
    assert push_orders, "some visits end in an order"
    assert steps["converted"] == len(push_orders)
    # Each order of a visit closes one of the visit's carts.
    assert {o["cart_id"] for o in push_orders} <= {c["cart_id"] for c in visit_carts}
    assert summary["funnel"]["orders"]["push"] == len(push_orders)


def test_visit_carts_get_no_latent_purchase(runs):
    _, (_, records) = runs
    visit_carts = {r["cart_id"] for r in records
                   if r["kind"] == "cart" and r["origin"] == "push_visit"}  # fmt: skip
    latent = [r for r in records if r["kind"] == "latent" and r["cart_id"] in visit_carts]

    assert latent, "abandoned visit carts record their latent draw"
    assert all(record["buy_anyway_at"] is None for record in latent)


def test_visits_leave_organic_behaviour_alone(runs):
    (_, quiet), (_, broadcast) = runs

    organic_quiet, organic_broadcast = _organic(quiet), _organic(broadcast)

    assert len(organic_quiet["cart"]) > 100
    assert organic_broadcast["cart"] == organic_quiet["cart"]
    assert organic_broadcast["latent"] == organic_quiet["latent"]
    assert organic_broadcast["order"] == organic_quiet["order"]


def test_visits_identify_no_one(runs):
    (_, quiet), (_, broadcast) = runs

    def identifies(records):
        return [(r["at"], r["device"], r["user_id"]) for r in records
                if r["kind"] == "sdk_call" and r["method"] == "identify"]  # fmt: skip

    assert identifies(broadcast) == identifies(quiet)
