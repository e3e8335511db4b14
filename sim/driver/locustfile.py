"""The locustfile that ``pushsim run`` hands to Locust; it ships inside the package.

The top-level locustfile.py of a source checkout does the same, for people who run ``locust``
themselves.
"""

from sim.driver.plugin import ShopperLanes

__all__ = ["ShopperLanes"]
