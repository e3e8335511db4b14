"""``pushsim scenarios``: list the bundled scenarios, one line each."""

from __future__ import annotations

import argparse

from sim.scenario import bundled_scenarios


def summary_line(path) -> str:
    """Return the first sentence of a scenario's header comment."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    sentence, dot, _ = text.partition(". ")
    return sentence + ("." if dot else "")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scenarios",
        help="list the scenarios bundled with pushsim",
        description="List the bundled scenarios with what each rehearses. Pass a name, such as "
        "cart_recovery, wherever a command takes a scenario file.",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    bundled = bundled_scenarios()
    width = max((len(name) for name in bundled), default=0)
    for name, path in bundled.items():
        print(f"{name:<{width}}  {summary_line(path)}")
    return 0
