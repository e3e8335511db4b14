"""Checks ``pushsim run`` makes before anything starts: the backend under test and the gateways.

Each check returns a message that names the value, the error and the fix, or None when the
check passes, so the command can print every problem and exit before it writes a run directory.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from sim.formats.gateway_config import GatewayConfig
from sim.formats.tokens import derive_run_key, run_key_id

# Wall seconds a TCP connect to the backend under test, or a health request to the gateways,
# may take. Both are expected on a local network, where a connect takes milliseconds.
CONNECT_TIMEOUT = 3.0


def target_unreachable(
    url: str, timeout: float = CONNECT_TIMEOUT, option: str = "--target"
) -> str | None:
    """Open and close one TCP connection to the host and port of ``url``.

    A TCP connect, not an HTTP request, so that a backend with no route at ``/`` or with
    authentication on every path still passes. Returns the problem, naming the ``option``
    that gave the URL, or None when it connects.
    """
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        return (
            f"{option} {url} is not reachable: connecting to {parts.hostname}:{port} failed "
            f"({reason}); start the backend under test or correct {option}"
        )


def _start_fix(path: Path) -> str:
    """Return how to start gateways for ``path``, without overwriting a run's record of them.

    A run directory keeps a copy of the config of the gateways it ran on, and starting new
    gateways over that copy would change the record of an earlier run.
    """
    if (path.parent / "epoch.json").exists():
        return (
            "that file records the gateways of the run in "
            f"{path.parent}: start new ones with `pushsim gateways --config-out gateways.json`, "
            "keep them running and pass --gateways-config gateways.json"
        )
    return f"start them with `pushsim gateways --config-out {path}` and keep them running"


def read_running_gateways(
    path: str | Path, timeout: float = CONNECT_TIMEOUT
) -> tuple[GatewayConfig | None, str | None]:
    """Read a gateways config file and check that its gateways pass their health check.

    Returns the config and None, or None and the problem, which names the file and the fix.
    """
    fix = _start_fix(Path(path))
    try:
        config = GatewayConfig.read(path)
    except ValueError as error:
        return None, f"--gateways-config: {error}"
    if not config.control_url:
        return None, (
            f"--gateways-config {path} names no control_url, so `pushsim gateways` did not "
            f"write it: start the gateways with `pushsim gateways --config-out {path}` and keep "
            "them running"
        )
    if not config.ledger:
        return None, (
            f"--gateways-config {path} names no delivery ledger, so it was written by an older "
            f"pushsim: restart the gateways with this one ({fix})"
        )

    health_url = f"{config.control_url}/healthz"
    try:
        with urllib.request.urlopen(health_url, timeout=timeout) as response:  # noqa: S310
            body = json.loads(response.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        return None, (
            f"the gateways of --gateways-config {path} do not answer at {health_url} "
            f"({reason}): {fix}"
        )
    if body.get("status") != "ok":
        return None, (
            f"the gateways of --gateways-config {path} report {body!r} at {health_url}: "
            f"restart them ({fix})"
        )

    if not Path(config.ledger).is_file():
        return None, (
            f"the delivery ledger {config.ledger} of --gateways-config {path} is not on this "
            "machine: run pushsim run where the gateways run"
        )
    return config, None


def same_seed_as_last_run(
    config: GatewayConfig, seed: int, timeout: float = CONNECT_TIMEOUT
) -> str | None:
    """Warn when the running gateways' last run used ``seed``, the seed of the run to come.

    The same seed replays the same shoppers, carts and device tokens. A backend that kept its
    state from that run may count them as handled and send fewer pushes, which reads like a
    broken setup. Returns the warning, or None for a new seed, for gateways that served no run
    yet, or when their response has no run_key_id.
    """
    request = urllib.request.Request(
        f"{config.control_url}/control/run",
        headers={"Authorization": f"Bearer {config.control_token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            last = json.loads(response.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):
        # A 404 comes before the first run, and the health check already covered failures.
        return None
    if last.get("run_key_id") != run_key_id(derive_run_key(seed)):
        return None
    return (
        f"these gateways last served a run with seed {seed}, the seed of this run: it replays "
        "the same shoppers, carts and device tokens, so a backend that kept its state may "
        "treat them as handled and send fewer pushes. Give each run a new seed with --set "
        "seed=N, or start the backend with an empty store"
    )
