"""Timing series: percentiles, merging across workers and the CSV table."""

from __future__ import annotations

from sim.driver.timing import Series, TimingTable, round_ms


def test_round_ms_like_locust():
    assert round_ms(7.4) == 7
    assert round_ms(147) == 150
    assert round_ms(3432) == 3400


def test_percentiles():
    series = Series()
    for value in range(1, 101):
        series.add(value)
    assert series.percentile(0.5) == 50
    assert series.percentile(0.99) == 99
    assert series.max_ms == 100


def test_merge_adds_counts():
    a, b = TimingTable(), TimingTable()
    a.get("schedule_lag").add(5)
    b.get("schedule_lag").add_drop(2000)
    a.merge_dict(b.to_dict())
    (row,) = a.rows()
    assert row["count"] == 2
    assert row["drops"] == 1
    assert row["max"] == 2000


def test_csv_has_header_and_rows():
    table = TimingTable()
    table.get("trigger_to_gateway").add(120)
    lines = table.csv_lines()
    assert lines[0][0] == "Name"
    assert lines[1][0] == "trigger_to_gateway"
