"""Joins truth, deliveries and backend observations into verdicts and the funnel."""
