"""Packaging: a non-editable install must carry every package and the bundled scenarios."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("sim", "reports")
        for init in (ROOT / top).rglob("__init__.py")
    }
    missing = sorted(found - listed)
    assert missing == [], f"add {missing} to [tool.setuptools] packages in pyproject.toml"


def test_scenarios_ship_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["package-dir"]["pushsim_scenarios"] == "scenarios"
    assert "*.yaml" in config["tool"]["setuptools"]["package-data"]["pushsim_scenarios"]
