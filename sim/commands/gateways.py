"""``pushsim gateways``: run the mock APNs and FCM gateways standalone."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from sim.commands.common import add_set_option, load_or_exit


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gateways",
        help="run the mock APNs and FCM gateways for a backend to send to",
        description="Start the mock APNs (TLS with and without ALPN, and h2c) and FCM (HTTP/1.1 "
        "and HTTP/2) gateways, a CONNECT proxy for clients that hard-code Apple's and "
        "Google's hosts, and the control API. Prints what a backend needs and runs until "
        "Ctrl-C. Everything binds 127.0.0.1 unless --host says otherwise.",
    )
    parser.add_argument(
        "--config-out",
        metavar="FILE",
        help="write URLs, credentials and client recipes as JSON to FILE (mode 0600)",
    )
    parser.add_argument(
        "--dir",
        default="pushsim-gateways",
        help="directory for credentials and the delivery ledger; reused when it exists "
        "(default: pushsim-gateways)",
    )
    parser.add_argument(
        "--open",
        action="store_true",
        help="accept any well-formed device token, for a team's own test tokens",
    )
    parser.add_argument("--scenario", help="scenario whose gateways section sets faults and mode")
    add_set_option(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--apns-port", type=int, default=0, help="APNs TLS port (0: free port)")
    parser.add_argument("--fcm-port", type=int, default=0, help="FCM TLS port (0: free port)")
    parser.add_argument(
        "--control-port", type=int, default=0, help="control API port (0: free port)"
    )
    parser.add_argument(
        "--access-token-lifetime",
        type=int,
        default=3600,
        help="lifetime of FCM OAuth access tokens in seconds (default 3600; google-auth "
        "refreshes 225 s before expiry, so shorter lifetimes make it fetch on every send)",
    )
    parser.add_argument(
        "--ready-file",
        metavar="FILE",
        help="write the config JSON here once every server listens (used by pushsim run)",
    )
    parser.set_defaults(handler=run)


def describe(config) -> str:
    """Return the human summary of where each gateway listens and how to authenticate."""
    apns, fcm = config.apns, config.fcm
    return "\n".join(
        [
            "pushsim gateways are running",
            f"  APNs  https://{apns.host}:{apns.tls_port}   (TLS, ALPN h2)",
            f"        https://{apns.host}:{apns.tls_no_alpn_port}   (TLS without ALPN)",
            f"        http://{apns.host}:{apns.h2c_port}    (h2c)",
            f"        key {apns.key_path}, key id {apns.key_id}, team {apns.team_id}, "
            f"topic {apns.topic}",
            f"  FCM   {fcm.send_url}",
            f"        service account {fcm.service_account} (token_uri {fcm.token_uri})",
            f"  CA    {config.ca_cert}",
            f"  proxy {config.proxy_url} (CONNECT to Apple's and Google's push hosts only)",
            f"  control {config.control_url} (bearer token in the config file)",
            f"  mode  {config.mode}{MODE_NOTES.get(config.mode, '')}",
        ]
    )


# The device tokens each mode accepts, for a team sending its own test pushes.
MODE_NOTES = {
    "registry": (
        " (only device tokens that a posted run issued: other pushes get BadDeviceToken or "
        "INVALID_ARGUMENT until pushsim run posts one; --open accepts your own test tokens)"
    ),
    "open": " (any well-formed device token)",
}


def run(args: argparse.Namespace) -> int:
    from sim.gateways.service import GatewayOptions, GatewayService

    scenario = None
    if args.scenario:
        scenario = load_or_exit(args.scenario, args.overrides).scenario
    options = GatewayOptions(
        directory=Path(args.dir),
        host=args.host,
        apns_port=args.apns_port,
        fcm_port=args.fcm_port,
        control_port=args.control_port,
        open_mode=args.open,
        access_token_lifetime=args.access_token_lifetime,
    )

    async def serve() -> None:
        service = GatewayService(options, scenario)
        config = await service.start()
        config.pid = os.getpid()
        if args.config_out:
            config.write(args.config_out)
        print(describe(config), flush=True)
        if args.config_out:
            print(f"  config written to {args.config_out}", flush=True)
        if args.ready_file:
            config.write(args.ready_file)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stop.set)
        await stop.wait()
        print("stopping the gateways", file=sys.stderr, flush=True)
        await service.stop()

    asyncio.run(serve())
    return 0
