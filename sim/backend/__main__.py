"""Run the reference backend from the command line: ``python -m sim.backend --db FILE``.

Secrets come from the environment, never from arguments, which other users can read in the
process list: ``PUSHSIM_TRACK_CREDENTIALS`` (``site_id:api_key`` pairs separated by commas),
``PUSHSIM_CDP_WRITE_KEYS`` (comma-separated) and ``PUSHSIM_CONTROL_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from sim.backend.app import DEFAULT_HOST, serve
from sim.backend.config import BackendConfig, TrackCredential

log = logging.getLogger("sim.backend")

TRACK_CREDENTIALS_VARIABLE = "PUSHSIM_TRACK_CREDENTIALS"
WRITE_KEYS_VARIABLE = "PUSHSIM_CDP_WRITE_KEYS"
CONTROL_TOKEN_VARIABLE = "PUSHSIM_CONTROL_TOKEN"


def parse_track_credentials(text: str) -> tuple[TrackCredential, ...]:
    """Parse ``site:key,site2:key2`` into credentials, raising ValueError on a bad pair."""
    credentials = []
    for number, pair in enumerate(filter(None, (part.strip() for part in text.split(","))), 1):
        site_id, colon, api_key = pair.partition(":")
        if not colon or not site_id or not api_key:
            raise ValueError(
                f"invalid {TRACK_CREDENTIALS_VARIABLE}: pair {number} is not site_id:api_key"
            )
        credentials.append(TrackCredential(site_id, api_key))
    return tuple(credentials)


def build_config(arguments: argparse.Namespace, environment: dict[str, str]) -> BackendConfig:
    """Combine command-line options and secrets from ``environment`` into a config."""
    write_keys = environment.get(WRITE_KEYS_VARIABLE, "")
    return BackendConfig(
        db_path=Path(arguments.db),
        track_credentials=parse_track_credentials(environment.get(TRACK_CREDENTIALS_VARIABLE, "")),
        cdp_write_keys=tuple(key.strip() for key in write_keys.split(",") if key.strip()),
        control_token=environment.get(CONTROL_TOKEN_VARIABLE) or None,
        rate_limit_per_second=arguments.rate_limit,
        rate_limit_burst=arguments.rate_burst,
        cdp_strict=arguments.cdp_strict,
        no_anonymous_merge=arguments.no_anonymous_merge,
        single_device_per_person=arguments.single_device_per_person,
    )


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sim.backend", description=__doc__)
    parser.add_argument("--db", required=True, help="SQLite file of the store (created if absent)")
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)"
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument(
        "--rate-limit", type=float, default=None, help="requests per second per credential"
    )
    parser.add_argument("--rate-burst", type=int, default=100, help="token bucket size in requests")
    parser.add_argument(
        "--cdp-strict", action="store_true", help="answer 400 to every invalid CDP call"
    )
    parser.add_argument(
        "--no-anonymous-merge",
        action="store_true",
        help="never stitch an anonymous profile into the person who identifies",
    )
    parser.add_argument(
        "--single-device-per-person",
        action="store_true",
        help="a newly registered token deletes the person's other tokens",
    )
    return parser.parse_args(argv)


async def run(config: BackendConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then flush every write in flight and stop."""
    server = await serve(config, host, port)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stopped.set)
    try:
        await stopped.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = build_config(arguments, dict(os.environ))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    asyncio.run(run(config, arguments.host, arguments.port))


if __name__ == "__main__":
    main()
