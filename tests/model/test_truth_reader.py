"""The truth ledger's writer and reader on hand-written records."""

from __future__ import annotations

import gzip
import json

import pytest

from sim.formats.truth import SCHEMA_VERSION, TruthView, TruthWriter, read_records


def _record(kind: str, at: float, seq: int, **fields) -> dict:
    return {"kind": kind, "at": at, "group": 1, "seq": seq, **fields}


@pytest.fixture
def ledger(tmp_path):
    path = tmp_path / "truth.jsonl.gz"
    with TruthWriter(path) as writer:
        writer.write(_record("install", 0.0, 1, device="d1-0", platform="ios", anonymous_id="a"))
        writer.write(_record("device_user", 0.0, 2, device="d1-0", person="p1-0"))
        writer.write(
            _record(
                "token_issued", 0.0, 3, device="d1-0", token="t1", platform="ios", reason="install"
            )
        )
        writer.write(_record("permission", 10.0, 4, device="d1-0", state="granted", prompted=True))
        writer.write(_record("device_user", 50.0, 5, device="d1-0", person="p1-1"))
        writer.write(
            _record(
                "token_died",
                100.0,
                6,
                device="d1-0",
                token="t1",
                reason="os_update",
                reported_at=200.0,
            )
        )
        writer.write(
            _record("uninstall", 150.0, 7, device="d1-0", platform="ios", anonymous_id="a")
        )
    return path


def test_writer_stamps_schema_version(ledger):
    records = list(read_records(ledger))

    assert len(records) == 7
    assert {r["v"] for r in records} == {SCHEMA_VERSION}


def test_token_owner_over_time(ledger):
    view = TruthView.load([ledger])

    assert view.token_owner("t1", 20.0).device == "d1-0"
    assert view.token_owner("t1", 20.0).person == "p1-0"
    assert view.token_owner("t1", 60.0).person == "p1-1"
    assert view.token_owner("t1", 100.0) is None
    assert view.token_owner("unknown", 20.0) is None


def test_installed_and_permission_over_time(ledger):
    view = TruthView.load([ledger])

    assert view.installed("d1-0", 0.0)
    assert not view.installed("d1-0", 150.0)
    assert not view.permission_granted("d1-0", 5.0)
    assert view.permission_granted("d1-0", 10.0)
    assert not view.permission_granted("d1-0", 160.0)


def test_reader_rejects_newer_schema(tmp_path):
    path = tmp_path / "future.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as stream:
        stream.write(json.dumps(_record("install", 0.0, 1, v=SCHEMA_VERSION + 1)) + "\n")

    with pytest.raises(ValueError, match="upgrade pushsim"):
        list(read_records(path))


def test_plain_file_round_trip(tmp_path):
    path = tmp_path / "truth.jsonl"
    with TruthWriter(path) as writer:
        writer.write(
            _record("cart", 1.5, 1, cart_id="c1-1", device="d1-0", person="p1-0", origin="organic")
        )

    assert next(read_records(path))["cart_id"] == "c1-1"
