"""Render an oracle result as plots, an HTML report, CSV and JSON."""
