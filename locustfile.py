"""Locust entry point for pushsim.

The Locust driver is not built yet. When it is, this file will run a scenario's shopper model in
scaled real time:

    locust -f locustfile.py --scenario scenarios/cart_recovery.yaml --host URL

Until then, check a scenario with ``pushsim validate scenarios/cart_recovery.yaml``.
"""

raise SystemExit(
    "pushsim's Locust driver is not available in this version. "
    "Run `pushsim validate SCENARIO` to check a scenario."
)
