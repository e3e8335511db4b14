"""The plan's summary: population, permission, tokens, funnel, journeys, faults and plan hash.

Every figure comes from counters kept during the run, so summarising never rereads events.
"""

from __future__ import annotations

from typing import Any

from sim.model.faults import FAULT_NAMES
from sim.model.recorder import PlanRecorder
from sim.model.tokens import ROTATION_CAUSES
from sim.model.world import World
from sim.scenario.schema import PLATFORMS


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def summarise(world: World, recorder: PlanRecorder, plan_hash: str) -> dict[str, Any]:
    """Return the summary of a finished run as a JSON-ready dict."""
    stats = world.stats
    scenario = world.scenario
    index, count = world.shard

    permission = {}
    for platform in PLATFORMS:
        prompts = stats.prompts[platform]
        granted = stats.answers[(platform, "granted")]
        permission[platform] = {
            "prompts": prompts,
            "granted": granted,
            "denied": stats.answers[(platform, "denied")],
            "not_determined": stats.answers[(platform, "not_determined")],
            "opt_in": _share(granted, prompts),
            "granted_without_prompt": stats.granted_without_prompt[platform],
        }

    organic_carts = stats.carts["organic"]
    rotated = sum(stats.tokens_issued[cause] for cause in ROTATION_CAUSES)
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "shard": f"{index}/{count}",
        "duration_s": world.horizon,
        # Simulated second 0 as a UTC time, so that an analyst can turn ``at`` into timestamps.
        "clock_start": scenario.clock.start.isoformat().replace("+00:00", "Z"),
        "population": {
            "groups": stats.groups,
            "people": stats.people,
            "installs": sum(stats.installs.values()),
            "installs_by_platform": dict(sorted(stats.installs.items())),
            "reinstalls": sum(stats.reinstalls.values()),
            "uninstalls": sum(stats.uninstalls.values()),
            "devices_by_platform": dict(sorted(stats.devices.items())),
            "multi_device_people": stats.multi_device_people,
            "shared_devices": stats.shared_devices,
            "ios_development_builds": stats.development_builds,
            "uninstall_30d": {
                "installs": stats.window_installs,
                "uninstalled": stats.window_uninstalls,
                "share": _share(stats.window_uninstalls, stats.window_installs),
            },
        },
        "permission": permission,
        "tokens": {
            "issued": sum(stats.tokens_issued.values()),
            "issued_by_reason": dict(sorted(stats.tokens_issued.items())),
            "rotated": rotated,
            "dead": sum(stats.tokens_died.values()),
            "dead_by_reason": dict(sorted(stats.tokens_died.items())),
        },
        "sessions": stats.sessions,
        "funnel": {
            "events": dict(sorted(stats.events.items())),
            "carts": dict(sorted(stats.carts.items())),
            "carts_abandoned": dict(sorted(stats.carts_abandoned.items())),
            "abandonment_share": _share(stats.carts_abandoned["organic"], organic_carts),
            "orders": dict(sorted(stats.orders.items())),
            "would_buy_anyway": stats.would_buy_anyway,
        },
        "identity": {
            "identifies": dict(sorted(stats.identifies.items())),
            "logouts": stats.logouts,
            "account_switches": stats.account_switches,
        },
        "journeys": [audience.summary() for audience in world.audiences],
        "faults": {
            name: {
                "rate": world.faults.rates[name],
                "opportunities": world.faults.opportunities[name],
                "injected": world.faults.injected[name],
            }
            for name in FAULT_NAMES
        },
        "sdk_calls": {"total": recorder.total, **dict(sorted(recorder.calls.items()))},
        "invalidations": dict(sorted(recorder.invalidations.items())),
        "plan_hash": plan_hash,
    }


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:g} simulated day{'' if days == 1 else 's'}"


def render(summary: dict[str, Any]) -> str:
    """Return the summary as the plain-text report that ``pushsim plan`` prints."""
    population = summary["population"]
    tokens = summary["tokens"]
    funnel = summary["funnel"]
    lines = [
        f"plan of {summary['scenario']} (seed {summary['seed']}, shard {summary['shard']}, "
        f"{_days(summary['duration_s'])} from {summary['clock_start']})",
        "",
        "population",
        f"  groups {population['groups']}, people {population['people']}, installs "
        f"{population['installs']} (reinstalls {population['reinstalls']}), uninstalls "
        f"{population['uninstalls']}",
        f"  devices {_pairs(population['devices_by_platform'])}; multi-device people "
        f"{population['multi_device_people']}, shared devices {population['shared_devices']}",
    ]
    if population["ios_development_builds"]:
        lines.append(
            f"  iOS development builds {population['ios_development_builds']}: their tokens "
            "work only with the APNs sandbox"
        )
    window = population["uninstall_30d"]
    if window["installs"]:
        lines.append(f"  uninstalled within 30 days: {window['share']:.1%} of {window['installs']}")

    lines += ["", "permission"]
    for platform, row in summary["permission"].items():
        opt_in = "n/a" if row["opt_in"] is None else f"{row['opt_in']:.1%}"
        lines.append(
            f"  {platform}: prompts {row['prompts']}, opt-in {opt_in} (denied {row['denied']}, "
            f"not determined {row['not_determined']}), granted without prompt "
            f"{row['granted_without_prompt']}"
        )

    lines += [
        "",
        "tokens",
        f"  issued {tokens['issued']} ({_pairs(tokens['issued_by_reason'])})",
        f"  rotated {tokens['rotated']}, dead {tokens['dead']} "
        f"({_pairs(tokens['dead_by_reason'])})",
        "",
        "funnel",
        f"  sessions {summary['sessions']}; {_pairs(funnel['events'])}",
        f"  carts {_pairs(funnel['carts'])}, abandoned {_pairs(funnel['carts_abandoned'])}"
        + (
            f" ({funnel['abandonment_share']:.1%} of organic carts)"
            if funnel["abandonment_share"] is not None
            else ""
        ),
        f"  orders {_pairs(funnel['orders'])}; abandoned carts that would be bought anyway "
        f"{funnel['would_buy_anyway']}",
        "",
        "journeys (expected audience by truth, ignoring frequency caps and quiet hours)",
    ]
    for journey in summary["journeys"]:
        if journey.get("estimated") is False:
            lines.append(f"  {journey['name']} ({journey['kind']}): not estimated by plan")
            continue
        counts = {
            key.replace("_", " "): value
            for key, value in journey.items()
            if key not in ("name", "kind")
        }
        lines.append(f"  {journey['name']} ({journey['kind']}): {_pairs(counts)}")

    lines += ["", "injected SDK faults (injected / opportunities)"]
    for name, row in summary["faults"].items():
        lines.append(f"  {name}: {row['injected']} / {row['opportunities']} (rate {row['rate']:g})")

    calls = {k: v for k, v in summary["sdk_calls"].items() if k != "total"}
    lines += [
        "",
        f"SDK calls {summary['sdk_calls']['total']} ({_pairs(calls)})",
        f"plan hash {summary['plan_hash']}",
    ]
    return "\n".join(lines)


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items()) or "none"
