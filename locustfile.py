"""Locust entry point for pushsim: the shopper model, live, against a push backend.

    locust -f locustfile.py --scenario scenarios/cart_recovery.yaml --host URL \\
        --gateways-config gateways.json -u 100 --headless

Each Locust user is one device lane, so ``-u`` is the number of SDK requests that may be in
flight at once; the scenario decides how many shoppers act and when. ``pushsim run`` starts the
gateways, the reference backend and this file for you. See docs/driver.md.
"""

from sim.driver.plugin import ShopperLanes

__all__ = ["ShopperLanes"]
