"""Configuration of the reference push backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sim.scenario.schema import Journey

# The fields of BackendConfig that switch on a naive behaviour, each with what it does.
# `pushsim backend` has an option for each, named after the field.
NAIVE_SWITCHES = {
    "no_exit_check": "send a journey's push even after its exit event",
    "retry_without_backoff": "retry 429 and 503 at once",
    "no_pruning_after_410": "never prune a token the gateway reports gone",
    "no_anonymous_merge": "never stitch anonymous profiles into people",
    "single_device_per_person": "a new token deletes the person's other tokens",
    "apns_sandbox_host": "send every APNs push to the sandbox host, as a development setup does",
}


@dataclass(frozen=True)
class TrackCredential:
    """One Customer.io Track API credential pair, sent as HTTP Basic ``site_id:api_key``."""

    site_id: str
    api_key: str

    def __repr__(self) -> str:
        # The API key is a secret, so a logged or printed config never shows it.
        return f"TrackCredential(site_id={self.site_id!r}, api_key='***')"


@dataclass(frozen=True)
class BackendConfig:
    """Settings of one backend instance.

    ``rate_limit_per_second`` is the sustained request rate allowed per credential (a Track API
    site id or a CDP write key), and ``rate_limit_burst`` the bucket size in requests. None turns
    rate limiting off. ``write_batch_max`` caps the writes committed in one SQLite transaction.
    ``write_linger_seconds`` is the longest the writer waits for more writes after its pipe runs
    empty, so a batch can grow. It stops waiting sooner when no new write arrives for
    ``sim.backend.store.QUIET_SECONDS``. The default, 0, commits what has arrived at once: the
    writer is a process of its own, so it commits one batch while the event loop parses the
    requests of the next.
    """

    db_path: Path
    track_credentials: tuple[TrackCredential, ...] = ()
    # Write keys and the control token are secrets, so the config's repr leaves them out.
    cdp_write_keys: tuple[str, ...] = field(default=(), repr=False)
    control_token: str | None = field(default=None, repr=False)
    rate_limit_per_second: float | None = None
    rate_limit_burst: int = 100
    # A CDP call without X-Strict-Mode: 1 that breaks a limit is dropped with a 200, as Segment
    # does. True returns 400 for every such call, as if each sent the header.
    cdp_strict: bool = False
    write_batch_max: int = 500
    write_linger_seconds: float = 0.0
    # Seconds a shutdown waits for requests in flight before it cancels them.
    shutdown_timeout_seconds: float = 10.0
    # Request bodies larger than this are read and discarded, never buffered (bytes).
    max_body_bytes: int = 4 * 1024 * 1024
    # Naive behaviours that a rehearsal can switch on to show what they cost.
    no_anonymous_merge: bool = False
    single_device_per_person: bool = False
    # Send a journey's push even when its exit event already happened.
    no_exit_check: bool = False
    # The sender's naive switches: retry 429/503 at once, and never prune after an APNs 410.
    retry_without_backoff: bool = False
    no_pruning_after_410: bool = False
    # Send to APNs's sandbox host, where the device tokens of store builds are refused.
    apns_sandbox_host: bool = False
    # The journeys the engine runs, usually a scenario's; empty runs no journey engine work.
    journeys: tuple[Journey, ...] = ()
    # Wall seconds between two looks at new events and due runs. It bounds a push's lateness.
    journey_poll_seconds: float = 0.05
    # Wall seconds between two sweeps for inactive people (inactivity journeys).
    inactivity_sweep_seconds: float = 1.0

    def naive_switches(self) -> list[str]:
        """Return the names of the naive switches that are on, in the order declared here."""
        return [name for name in NAIVE_SWITCHES if getattr(self, name)]

    def __post_init__(self) -> None:
        if self.rate_limit_per_second is not None and not self.rate_limit_per_second > 0:
            raise ValueError(
                f"invalid rate_limit_per_second {self.rate_limit_per_second!r}: "
                "give a rate above 0, or None to turn rate limiting off"
            )
        if self.rate_limit_burst < 1:
            raise ValueError(f"invalid rate_limit_burst {self.rate_limit_burst!r}: it must be >= 1")
        if self.write_batch_max < 1:
            raise ValueError(f"invalid write_batch_max {self.write_batch_max!r}: it must be >= 1")
        if not self.journey_poll_seconds > 0:
            raise ValueError(
                f"invalid journey_poll_seconds {self.journey_poll_seconds!r}: it must be > 0"
            )
        if not self.inactivity_sweep_seconds > 0:
            raise ValueError(
                f"invalid inactivity_sweep_seconds {self.inactivity_sweep_seconds!r}: "
                "it must be > 0"
            )
        if self.write_linger_seconds < 0:
            raise ValueError(
                f"invalid write_linger_seconds {self.write_linger_seconds!r}: it must be >= 0"
            )
