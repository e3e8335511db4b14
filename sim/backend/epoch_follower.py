"""The run's epoch read from the gateways, for a backend that outlives several runs.

``pushsim run --gateways-config`` posts each run to the gateways a few seconds before its first
action, but it has no control token for a backend it did not start. A backend started with
``pushsim backend --epoch-from-gateways`` polls the gateways' ``GET /control/run`` and installs
each new epoch as ``POST /control/epoch`` would.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from sim.backend.control import install_clock
from sim.backend.services import RunClock, Services
from sim.formats.epoch import Epoch
from sim.formats.gateway_config import GatewayConfig

log = logging.getLogger(__name__)

# Wall seconds between polls. pushsim run posts the epoch 3 s before the first action, so a
# half-second poll installs it well before the first event arrives.
POLL_INTERVAL = 0.5
# Wall seconds one poll may take.
REQUEST_TIMEOUT = 2.0


async def fetch_run_clock(session: aiohttp.ClientSession, control_url: str) -> RunClock | None:
    """Return the clock of the run the gateways serve, or None before any run is posted.

    Raises aiohttp.ClientError, TimeoutError or ValueError when the request fails or the
    response is not a run.
    """
    url = f"{control_url}/control/run"
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as response:
        if response.status == 404:
            return None
        if response.status != 200:
            text = (await response.text())[:200]
            raise ValueError(f"GET {url} returned status {response.status}: {text}")
        body = await response.json()
    return RunClock(Epoch.from_mapping(body["epoch"]), None, body.get("shard_count"))


async def follow_gateways_epoch(
    services: Services, gateways: GatewayConfig, interval: float = POLL_INTERVAL
) -> None:
    """Install every new epoch the gateways serve, until cancelled."""
    headers = {"Authorization": f"Bearer {gateways.control_token}"}
    failing = False
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:
            try:
                clock = await fetch_run_clock(session, gateways.control_url)
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as error:
                # Log the first failure of a streak and the recovery, not every poll.
                if not failing:
                    log.warning(
                        "reading the run's epoch from the gateways at %s failed (%s: %s); "
                        "retrying every %g s",
                        gateways.control_url,
                        type(error).__name__,
                        error or "no detail",
                        interval,
                    )
                failing = True
            else:
                if failing:
                    log.info("reading the run's epoch from %s works again", gateways.control_url)
                failing = False
                if clock is not None and clock.epoch != services.clock.epoch:
                    await install_clock(services, clock)
            await asyncio.sleep(interval)
