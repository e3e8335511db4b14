"""Joins truth, deliveries and backend observations into verdicts and the funnel.

``judge_run(load_run(run_dir))`` returns an ``OracleResult``; ``to_summary`` turns it into the
``summary.json`` object that docs/report-format.md describes.
"""

from sim.oracle.inputs import RunInputs, load_run
from sim.oracle.judge import judge_run
from sim.oracle.result import OracleResult, to_summary

__all__ = ["OracleResult", "RunInputs", "judge_run", "load_run", "to_summary"]
