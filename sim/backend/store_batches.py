"""One batch of store writes, run and committed in a single transaction.

The store's writer process runs every batch through ``commit_batch``. An op that raises rolls
back only its own changes: the batch runs again with each op in its own savepoint, and the
other ops still commit.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

WriteOp = Callable[[sqlite3.Connection], Any]


class BatchOutcome:
    """Results of a committed batch in the order of its ops, and the errors by op index."""

    __slots__ = ("results", "errors")

    def __init__(self, results: list[Any], errors: dict[int, BaseException] | None) -> None:
        self.results = results
        self.errors = errors


def commit_batch(connection: sqlite3.Connection, ops: list[WriteOp]) -> BatchOutcome:
    """Run ``ops`` in one transaction, commit it and return each op's result or error.

    When the commit itself fails, every op of the batch gets that error.
    """
    try:
        connection.execute("BEGIN IMMEDIATE")
        outcome = _apply_together(connection, ops)
        if outcome is None:
            # An op raised and its partial changes are in the transaction, so run the batch
            # again and isolate each op in a savepoint.
            connection.execute("ROLLBACK")
            connection.execute("BEGIN IMMEDIATE")
            outcome = _apply_alone(connection, ops)
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        log.error("commit of a batch of %d writes failed: %s", len(ops), error)
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        return BatchOutcome([None] * len(ops), dict.fromkeys(range(len(ops)), error))
    return outcome


def _apply_together(connection: sqlite3.Connection, ops: list[WriteOp]) -> BatchOutcome | None:
    """Run every op without savepoints; None as soon as one op raises.

    A savepoint costs two more statements per op. An op with an ``apply_group`` attribute runs
    with the other ops of its batch that share it, in one call ``apply_group(connection, ops)``,
    after the ungrouped ops.
    """
    results: list[Any] = [None] * len(ops)
    groups: dict[Callable, list[int]] = {}
    for index, op in enumerate(ops):
        apply_group = getattr(op, "apply_group", None)
        if apply_group is not None:
            groups.setdefault(apply_group, []).append(index)
            continue
        try:
            results[index] = op(connection)
        except Exception:  # the batch is run again and this op's error reported then
            return None

    for apply_group, indexes in groups.items():
        try:
            grouped = apply_group(connection, [ops[index] for index in indexes])
        except Exception:  # the batch is run again with each op alone
            log.exception("grouped writes failed; running their batch one write at a time")
            return None
        for index, result in zip(indexes, grouped, strict=True):
            results[index] = result
    return BatchOutcome(results, None)


def _apply_alone(connection: sqlite3.Connection, ops: list[WriteOp]) -> BatchOutcome:
    results: list[Any] = [None] * len(ops)
    errors: dict[int, BaseException] = {}
    for index, op in enumerate(ops):
        connection.execute("SAVEPOINT write_op")
        try:
            results[index] = op(connection)
        except Exception as error:  # the op's caller receives the error through its future
            connection.execute("ROLLBACK TO write_op")
            connection.execute("RELEASE write_op")
            errors[index] = error
            continue
        connection.execute("RELEASE write_op")
    return BatchOutcome(results, errors)
