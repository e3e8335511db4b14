"""SDK calls the backend did not accept, counted from the truth ledger's http_status."""

from __future__ import annotations

from sim.oracle.judge import judge_run
from sim.oracle.ledger import TruthIndex
from sim.oracle.sdk_errors import judge_sdk_errors
from tests.oracle.ledgers import SCENARIO, Story

GATED = SCENARIO.replace("gates:", "gates:\n  - sdk_error_rate <= 0.01")


def sent_calls(story: Story, statuses: list[int | None], start: float = 10.0) -> None:
    """Add one identify per status, sent with that response; None records no status."""
    for offset, status in enumerate(statuses):
        fields = {} if status is None else {"http_status": status}
        story.call("identify", start + offset, "d1-0", "p1-0", user_id="p1-0", **fields)


def test_mixed_statuses_counted():
    story = Story()
    sent_calls(story, [200, 200, 202, 404, 404, 429, 503, 0, 301, None])
    story.call("track", 30.0, "d1-0", "p1-0", event="x", status="dropped", lag_ms=1500.0)
    story.call("clear_identity", 31.0, "d1-0", "p1-0", status="local")

    errors = judge_sdk_errors(TruthIndex.build(story.records))

    assert errors.sent == 10
    assert errors.failed == 6
    assert errors.error_rate == 0.6
    assert errors.responses == {
        "200": 2, "202": 1, "301": 1, "404": 2, "429": 1, "503": 1, "no response": 1,
        "not recorded": 1,
    }  # fmt: skip
    assert errors.failed_responses == {
        "301": 1, "404": 2, "429": 1, "503": 1, "no response": 1,
    }  # fmt: skip
    assert errors.describe_failures() == "301: 1, 404: 2, 429: 1, 503: 1, no response: 1"
    assert errors.over_limit


def test_no_call_sent_has_no_rate():
    story = Story()
    story.call("identify", 10.0, "d1-0", "p1-0", user_id="p1-0", status="planned")
    story.call("track", 11.0, "d1-0", "p1-0", event="x", status="dropped", lag_ms=1500.0)

    errors = judge_sdk_errors(TruthIndex.build(story.records))

    assert errors.sent == 0
    assert errors.error_rate is None
    assert not errors.over_limit


def test_gate_passes_when_accepted(tmp_path):
    story = Story()
    sent_calls(story, [200] * 99 + [500])

    result = judge_run(story.write(tmp_path, GATED))

    gate = next(gate for gate in result.gates if gate.metric == "sdk_error_rate")
    assert result.metrics["sdk_error_rate"] == 0.01
    assert gate.passed


def test_rate_limit_fails_gate(tmp_path):
    story = Story()
    sent_calls(story, [200] * 90 + [429] * 10)

    result = judge_run(story.write(tmp_path, GATED))

    gate = next(gate for gate in result.gates if gate.metric == "sdk_error_rate")
    assert gate.value == 0.1
    assert not gate.passed
    assert result.sdk_errors.failed_responses == {"429": 10}


def test_target_answering_404_fails_gate(tmp_path):
    story = Story()
    sent_calls(story, [404] * 50)

    result = judge_run(story.write(tmp_path, GATED))

    assert result.metrics["sdk_error_rate"] == 1.0
    assert not result.gates_passed
    assert result.sdk_errors.describe_failures() == "404: 50"
