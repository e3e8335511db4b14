"""Imports that must never exist between the parts of pushsim.

The backend and the gateways are the system under test and the stand-ins for Apple and Google:
they meet only over the wire. The report renders what the oracle computed and never reruns the
model. Shared formats live in sim.formats, which imports nothing else of pushsim.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "sim/backend": ("sim.gateways", "sim.model", "sim.oracle", "sim.driver"),
    "sim/gateways": ("sim.backend", "sim.model", "sim.oracle", "sim.driver"),
    "sim/model": ("sim.backend", "sim.gateways", "sim.oracle", "sim.driver"),
    "sim/formats": ("sim.backend", "sim.gateways", "sim.model", "sim.oracle", "sim.driver"),
    "reports": ("sim.model", "sim.driver", "sim.backend", "sim.gateways"),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_forbidden_imports(folder):
    offences = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in imported_modules(path):
            if any(name == banned or name.startswith(banned + ".") for banned in FORBIDDEN[folder]):
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offences == []
