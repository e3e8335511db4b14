"""Running counts of a run: population, tokens, permission, funnel and carts.

Counts are plain integers kept as the model runs, so a summary never needs the event stream.
"""

from __future__ import annotations

from collections import Counter

# Installs younger than this at the end of the run are left out of the uninstall share.
UNINSTALL_WINDOW = 30 * 86400.0


class RunStats:
    """Counters the model updates as things happen."""

    def __init__(self, horizon: float):
        self.horizon = horizon
        self.groups = 0
        self.people = 0
        self.installs: Counter[str] = Counter()  # by platform, first installs and reinstalls
        self.reinstalls: Counter[str] = Counter()
        self.uninstalls: Counter[str] = Counter()
        self.devices: Counter[str] = Counter()  # distinct devices by platform
        self.development_builds = 0  # iOS devices whose tokens are for the APNs sandbox
        self.multi_device_people = 0
        self.shared_devices = 0
        self.prompts: Counter[str] = Counter()
        self.answers: Counter[tuple[str, str]] = Counter()  # (platform, answer)
        self.granted_without_prompt: Counter[str] = Counter()
        self.tokens_issued: Counter[str] = Counter()  # by reason
        self.tokens_died: Counter[str] = Counter()  # by reason
        self.events: Counter[str] = Counter()  # true event names, before any drift
        self.sessions = 0
        self.carts: Counter[str] = Counter()  # by origin
        self.carts_abandoned: Counter[str] = Counter()  # by origin
        self.orders: Counter[str] = Counter()  # by what led to it
        self.would_buy_anyway = 0
        self.identifies: Counter[str] = Counter()  # by how
        self.logouts = 0
        self.account_switches = 0
        self.reactions: Counter[str] = Counter()
        # Installs old enough to have lived the whole uninstall window, and how many of them
        # were removed inside it.
        self.window_installs = 0
        self.window_uninstalls = 0

    def install(self, platform: str, at: float, reinstall: bool) -> None:
        self.installs[platform] += 1
        if reinstall:
            self.reinstalls[platform] += 1
        if at + UNINSTALL_WINDOW <= self.horizon:
            self.window_installs += 1

    def uninstall(self, platform: str, installed_at: float, at: float) -> None:
        self.uninstalls[platform] += 1
        if installed_at + UNINSTALL_WINDOW <= self.horizon and at - installed_at < UNINSTALL_WINDOW:
            self.window_uninstalls += 1
