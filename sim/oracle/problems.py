"""Problems that span triggers and pushes: wrong person, duplicates, pushes after conversion, and
pushes to devices without permission.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.oracle.ledger import TruthIndex
from sim.oracle.pushes import Push
from sim.oracle.triggers import Trigger

PROBLEM_KINDS = (
    "wrong_person",
    "duplicate_delivery",
    "push_after_conversion",
    "push_without_permission",
)
# Example ids kept per problem kind, for the report.
EXAMPLES_KEPT = 5


@dataclass
class Problem:
    """Occurrences of one kind of problem: how many, when, and a few example ids."""

    kind: str
    count: int = 0
    examples: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def note(self, at: float, example: str) -> None:
        self.count += 1
        self.times.append(at)
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(example)


def subject_of(trigger: Trigger, index: TruthIndex) -> str:
    """Return the person a trigger's push is about: the cart's owner, else the trigger's person."""
    cart = index.carts.get(trigger.value or "")
    return cart["person"] if cart else trigger.person


def find_problems(
    attributed: list[tuple[Trigger, list[Push]]],
    pushes: list[Push],
    exits: dict[str, dict[str, list[float]]],
    index: TruthIndex,
) -> dict[str, Problem]:
    """Count every cross-row problem.

    ``exits`` maps journey and match value to the times of the exit calls the backend was sent.
    """
    problems = {kind: Problem(kind) for kind in PROBLEM_KINDS}

    for trigger, attempts in attributed:
        subject = subject_of(trigger, index)
        delivered = [push for push in attempts if push.accepted and push.row.delivery_id]

        for push in delivered:
            for reaction in index.reactions.get(push.row.delivery_id, []):
                if reaction["step"] == "displayed" and reaction.get("person") != subject:
                    problems["wrong_person"].note(
                        push.at,
                        f"{push.row.delivery_id} about {subject} shown to {reaction.get('person')}",
                    )

        # Counted per device token, because one push to each of a person's phones is one
        # delivery each. Retries that reuse the apns-id of an accepted push are one delivery.
        message_ids: dict[str, set[str]] = {}
        for push in delivered:
            seen = message_ids.setdefault(push.row.token, set())
            if push.row.message_id in seen:
                continue
            seen.add(push.row.message_id)
            if len(seen) > 1:
                problems["duplicate_delivery"].note(
                    push.at, f"{trigger.trigger_id} {push.row.delivery_id}"
                )

        journey_exits = exits.get(trigger.journey, {}).get(trigger.value or "", [])
        exited = [at for at in journey_exits if at >= trigger.at]
        if exited:
            for push in attempts:
                if push.accepted and push.at > exited[0]:
                    problems["push_after_conversion"].note(
                        push.at, f"{trigger.trigger_id} {push.row.delivery_id or push.row.seq}"
                    )

    for push in pushes:
        if not push.accepted or push.owner_device is None:
            continue
        # An uninstalled app whose token still lives (a reinstall may keep it) drops the push on
        # the phone. The backend had no way to know, so that push is not a permission problem.
        if not index.view.installed(push.owner_device, push.at):
            continue
        if not index.view.permission_granted(push.owner_device, push.at):
            problems["push_without_permission"].note(
                push.at, f"{push.row.delivery_id or push.row.seq} to {push.owner_device}"
            )
    return problems
