"""Bundled rehearsal scenarios, installed as the package ``pushsim_scenarios``."""
