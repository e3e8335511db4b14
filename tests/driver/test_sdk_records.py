"""The driver's sdk_call lines are the lines the truth ledger would write for the record dict."""

from __future__ import annotations

import math

import pytest

from sim.driver.sdk_records import sdk_call_line
from sim.formats.truth import TruthWriter, encode, fragment, read_records
from sim.model.ports import SdkCall
from tests.driver.model_calls import model_calls


def record_line(call: SdkCall, status: str, http_status=None, lag_ms=None, sent_wall=None) -> str:
    """The line as the driver wrote it before it encoded the values alone."""
    record = {"v": 1, "kind": "sdk_call", "status": status, **call.to_record()}
    if http_status is not None:
        record["http_status"] = http_status
    if lag_ms is not None:
        record["lag_ms"] = lag_ms
    if sent_wall is not None:
        record["sent_wall"] = sent_wall
    return encode(record)


def test_model_calls_encode_as_their_records():
    calls = model_calls()
    assert len(calls) > 500
    assert {"anonymous_track", "register_token", "identify"} <= {call.method for call in calls}

    for number, call in enumerate(calls):
        sent_wall = round(1_800_000_000.0 + call.at / 1080.0, 4)
        line = sdk_call_line(call, "sent", 200, 1.2, sent_wall)
        assert line == record_line(call, "sent", 200, 1.2, sent_wall)
        assert sdk_call_line(call, "local") == record_line(call, "local")
        lag = round(number * 0.37, 1)
        assert sdk_call_line(call, "dropped", None, lag) == record_line(call, "dropped", None, lag)


ODD_VALUES = [
    None, "", "é ☃ \U0001f600", 'quote " and \\ backslash', "line\nbreak\ttab\x00\x1f\u2028",
    0, -7, 2**70, 0.0, -0.0, 1e-7, 1e22, 123456789.123456789, math.inf, -math.inf, math.nan,
    True, False, [1, "a", None], {"a": {"b": [1.5, True]}, "é": None}, (1, 2),
]  # fmt: skip


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_fragment_matches_the_encoder(value):
    assert fragment(value) == encode(value)
    assert fragment({"k": value}) == encode({"k": value})


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_odd_values_in_every_field(value):
    call = SdkCall(at=1.5, group_id=3, seq=4, method="track", device="d3-0", person="p3-0",
                   anonymous_id="a", user_id=None)  # fmt: skip
    for name in ("at", "group_id", "seq", "method", "device", "person", "anonymous_id",
                 "user_id", "token", "event", "properties", "attributes", "fault"):  # fmt: skip
        original = getattr(call, name)
        setattr(call, name, value)
        assert sdk_call_line(call, "sent", 201, 0.5, value) == record_line(
            call, "sent", 201, 0.5, value
        )
        setattr(call, name, original)


def test_lines_read_back_as_records(tmp_path):
    call = SdkCall(at=2.25, group_id=1, seq=9, method="track", device="d1-0", person="p1-0",
                   anonymous_id="a", user_id="u", event="viewed",
                   properties={"price": 19.9, "name": "é"})  # fmt: skip
    path = tmp_path / "truth.jsonl"
    with TruthWriter(path) as writer:
        writer.write_line(sdk_call_line(call, "sent", 200, 0.3, 1_800_000_000.1234))
        assert writer.count == 1
    (record,) = read_records(path)
    expected = {"v": 1, "kind": "sdk_call", "status": "sent", **call.to_record()}
    expected.update(http_status=200, lag_ms=0.3, sent_wall=1_800_000_000.1234)
    assert record == expected
