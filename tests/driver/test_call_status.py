"""The http_status a sent SDK call records when it took one or more requests."""

from __future__ import annotations

import pytest

from sim.driver.http import NO_RESPONSE
from sim.driver.sdk_records import call_status


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([200], 200),
        ([202, 200], 200),
        ([404, 200], 404),
        ([200, 429], 429),
        ([200, NO_RESPONSE], NO_RESPONSE),
        ([503, 404], 503),
        ([], None),
    ],
)
def test_first_failure_else_last(statuses, expected):
    assert call_status(statuses) == expected
