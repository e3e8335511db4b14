"""``pushsim backend``: run the reference push backend with a scenario's journeys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

from sim.backend.__main__ import (
    CONTROL_TOKEN_VARIABLE,
    TRACK_CREDENTIALS_VARIABLE,
    WRITE_KEYS_VARIABLE,
    parse_track_credentials,
)
from sim.backend.app import DEFAULT_HOST, BackendServer
from sim.backend.config import NAIVE_SWITCHES, BackendConfig, TrackCredential
from sim.backend.epoch_follower import follow_gateways_epoch
from sim.backend.push import SenderFactory
from sim.backend.push_gateways import sender_factory_from_file
from sim.backend.services import SERVICES
from sim.commands.common import EXIT_USAGE, add_set_option, load_or_exit
from sim.formats.gateway_config import GatewayConfig
from sim.scenario import Scenario

log = logging.getLogger(__name__)

DEFAULT_DB = "pushsim-backend.db"

# Naive switches: (option, BackendConfig field, help).
SWITCHES = tuple(
    ("--" + name.replace("_", "-"), name, text) for name, text in NAIVE_SWITCHES.items()
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backend",
        help="run the reference push backend with a scenario's journeys",
        description="Run the reference push backend on loopback until Ctrl-C: Track API and CDP "
        "intake, the journeys of the scenario, and a sender to the gateways. It prints its URL "
        "and credentials. Secrets may also come from PUSHSIM_TRACK_CREDENTIALS "
        "(site_id:api_key,...), PUSHSIM_CDP_WRITE_KEYS and PUSHSIM_CONTROL_TOKEN.",
    )
    parser.add_argument(
        "--scenario",
        metavar="FILE",
        help="scenario whose journeys and target credentials to use (default: the defaults)",
    )
    add_set_option(parser)
    parser.add_argument(
        "--gateways-config",
        metavar="FILE",
        help="gateways' config file written by `pushsim gateways`; without it every push fails",
    )
    parser.add_argument(
        "--epoch-from-gateways",
        action="store_true",
        help="poll the gateways of --gateways-config for the run's epoch every 0.5 s and use "
        "each new one, for a backend that serves several `pushsim run --target` runs",
    )
    parser.add_argument(
        "--db", default=DEFAULT_DB, metavar="PATH", help="SQLite file (default %(default)s)"
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=0, metavar="N", help="TCP port; 0 (default) picks a free one"
    )
    parser.add_argument(
        "--ready-file",
        metavar="PATH",
        help="write a JSON file with URLs, credentials and pid once listening (mode 0600)",
    )
    parser.add_argument(
        "--rate-limit", type=float, default=None, help="requests per second per credential"
    )
    for option, _, text in SWITCHES:
        parser.add_argument(option, action="store_true", help=f"naive switch: {text}")
    parser.set_defaults(handler=run)


def build_config(
    args: argparse.Namespace, scenario: Scenario, environment: dict[str, str]
) -> BackendConfig:
    """Combine options, the scenario's journeys and target, and secrets from ``environment``."""
    track = parse_track_credentials(environment.get(TRACK_CREDENTIALS_VARIABLE, ""))
    if not track:
        track = (TrackCredential(scenario.target.site_id, scenario.target.api_key),)
    write_keys = tuple(
        key.strip() for key in environment.get(WRITE_KEYS_VARIABLE, "").split(",") if key.strip()
    )
    # Hex, so that the token never starts with "-": a command line passes it as an option's
    # value, which argparse would read as another option (token_urlsafe starts so in 1 of 64).
    control_token = environment.get(CONTROL_TOKEN_VARIABLE) or secrets.token_hex(24)
    return BackendConfig(
        db_path=Path(args.db),
        track_credentials=track,
        cdp_write_keys=write_keys or (scenario.target.write_key,),
        control_token=control_token,
        rate_limit_per_second=args.rate_limit,
        journeys=tuple(scenario.journeys),
        **{field: getattr(args, field) for _, field, _ in SWITCHES},
    )


def connection_details(config: BackendConfig, url: str) -> dict:
    """Return what a client needs to reach the backend, as written to the ready file."""
    track = config.track_credentials[0]
    return {
        "url": url,
        "control_url": f"{url}/control/epoch",
        "metrics_url": f"{url}/metrics",
        "track": {"site_id": track.site_id, "api_key": track.api_key},
        "cdp": {"write_key": config.cdp_write_keys[0]},
        "control_token": config.control_token,
        "db": str(config.db_path),
        "pid": os.getpid(),
    }


def write_ready_file(path: Path, details: dict) -> None:
    """Write ``details`` to ``path`` readable only by its owner, replacing it in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(details, handle, indent=2)
        handle.write("\n")
    os.replace(partial, path)


def print_banner(config: BackendConfig, details: dict) -> None:
    journeys = ", ".join(f"{j.name} ({j.kind})" for j in config.journeys) or "none"
    track = details["track"]
    print(f"pushsim backend listening on {details['url']}")
    print(f"  Track API      site id {track['site_id']}, api key {track['api_key']}")
    print(f"  CDP            write key {details['cdp']['write_key']}")
    print(f"  control        {details['control_url']}, bearer token {details['control_token']}")
    print(f"  metrics        {details['metrics_url']}")
    print(f"  journeys       {journeys}")
    print(f"  store          {config.db_path}")
    print("Press Ctrl-C to stop.", flush=True)


async def serve_until_stopped(
    config: BackendConfig,
    host: str,
    port: int,
    sender_factory: SenderFactory | None,
    ready_file: Path | None,
    epoch_gateways: GatewayConfig | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then stop intake, finish the pushes and flush the store.

    With ``epoch_gateways``, the run's epoch is read from those gateways' control API.
    """
    server = BackendServer(config, host, port, sender_factory=sender_factory)
    await server.start()
    follower = None
    if epoch_gateways is not None:
        follower = asyncio.create_task(follow_gateways_epoch(server.app[SERVICES], epoch_gateways))
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stopped.set)
    try:
        url_host = f"[{host}]" if ":" in host else host
        details = connection_details(config, f"http://{url_host}:{server.port}")
        if ready_file is not None:
            write_ready_file(ready_file, details)
        print_banner(config, details)
        await stopped.wait()
        print("pushsim backend stopping: finishing pushes in flight", flush=True)
    finally:
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        await server.close()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
    print("pushsim backend stopped", flush=True)


def run(args: argparse.Namespace) -> int:
    loaded = load_or_exit(args.scenario, args.overrides)
    try:
        config = build_config(args, loaded.scenario, dict(os.environ))
    except ValueError as error:
        print(f"pushsim: {error}", file=sys.stderr)
        return EXIT_USAGE

    sender_factory = None
    epoch_gateways = None
    if args.epoch_from_gateways and not args.gateways_config:
        print(
            "pushsim: --epoch-from-gateways reads the epoch from the gateways: add "
            "--gateways-config FILE",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.gateways_config:
        try:
            sender_factory = sender_factory_from_file(args.gateways_config)
            if args.epoch_from_gateways:
                epoch_gateways = GatewayConfig.read(args.gateways_config)
        except ValueError as error:
            print(f"pushsim: {error}", file=sys.stderr)
            return EXIT_USAGE

    ready_file = Path(args.ready_file) if args.ready_file else None
    try:
        asyncio.run(
            serve_until_stopped(
                config, args.host, args.port, sender_factory, ready_file, epoch_gateways
            )
        )
    except OSError as error:
        print(
            f"pushsim: cannot serve on {args.host}:{args.port}: {error}; "
            "choose another --port or 0 for a free one",
            file=sys.stderr,
        )
        return 1
    return 0
