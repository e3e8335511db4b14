"""``pushsim plan``: run the model on a virtual clock and print what a live run would send."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from sim.commands.common import EXIT_USAGE, add_set_option, load_or_exit
from sim.formats.shards import parse_shard
from sim.model.plan import run_plan
from sim.model.summary import render

# Wall seconds between two progress lines on stderr.
PROGRESS_EVERY = 3.0
# Exit status after Ctrl-C, as shells report a process ended by SIGINT.
EXIT_INTERRUPTED = 130


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="simulate the population on a virtual clock and print its plan, without a network",
        description="Run the shopper model on a virtual clock with the SDK bound to a "
        "recorder. Prints the population, permission, tokens, funnel, each journey's expected "
        "audience, the injected SDK faults and the plan hash, a sha256 over the SDK calls in "
        "canonical order (simulated time, group, sequence).",
    )
    parser.add_argument("scenario", metavar="SCENARIO", help="scenario file or bundled name")
    parser.add_argument("--seed", type=int, help="seed to use instead of the scenario's")
    parser.add_argument(
        "--shard",
        default="0/1",
        metavar="i/N",
        help="simulate only the groups of shard i of N (default: 0/1, every group)",
    )
    parser.add_argument("--out", metavar="DIR", help="folder for summary.json and the streams")
    parser.add_argument(
        "--events",
        action="store_true",
        help="also write every SDK call to DIR/events.jsonl, one JSON object per line",
    )
    parser.add_argument(
        "--truth",
        action="store_true",
        help="also write the truth ledger to DIR/truth.jsonl.gz",
    )
    add_set_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        shard = parse_shard(args.shard)
    except ValueError as error:
        print(f"pushsim: {error}", file=sys.stderr)
        return EXIT_USAGE
    if (args.events or args.truth) and not args.out:
        print("pushsim: --events and --truth write files: add --out DIR", file=sys.stderr)
        return EXIT_USAGE
    if args.seed is not None and args.seed < 0:
        print(f"pushsim: invalid --seed {args.seed}: use an integer >= 0", file=sys.stderr)
        return EXIT_USAGE

    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        print(
            f"pushsim: --out {out} is a file: give a folder for the plan's files", file=sys.stderr
        )
        return EXIT_USAGE

    scenario = load_or_exit(args.scenario, args.overrides).scenario
    if args.seed is not None:
        scenario = dataclasses.replace(scenario, seed=args.seed)

    started = time.monotonic()
    last = [started]

    def progress(world, recorder) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY:
            return
        last[0] = now
        print(
            f"plan: day {world.env.now / 86400:.2f} of {world.horizon / 86400:g}, "
            f"{world.stats.groups} groups, {sum(world.stats.installs.values())} installs, "
            f"{recorder.total} SDK calls, {now - started:.0f} s",
            file=sys.stderr,
        )

    try:
        result = run_plan(
            scenario,
            shard=shard,
            events_path=out / "events.jsonl" if out and args.events else None,
            truth_path=out / "truth.jsonl.gz" if out and args.truth else None,
            progress=progress,
        )
    except KeyboardInterrupt:
        # The stream files are closed but incomplete, and no summary is written.
        print("pushsim: plan interrupted; files in --out are incomplete", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(render(result.summary))
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
        written = [out / "summary.json"]
        if args.events:
            written.append(out / "events.jsonl")
        if args.truth:
            written.append(out / "truth.jsonl.gz")
        print(f"wrote {', '.join(str(path) for path in written)}")
        for name, option in (("events.jsonl", "--events"), ("truth.jsonl.gz", "--truth")):
            stale = out / name
            if stale not in written and stale.exists():
                print(
                    f"pushsim: warning: {stale} is left from an earlier plan and does not "
                    f"belong to this one: delete it, or add {option} to rewrite it",
                    file=sys.stderr,
                )
    return 0
