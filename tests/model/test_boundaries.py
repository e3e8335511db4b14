"""The model stays behind its ports: no other side, no wall clock, no unseeded draws."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MODEL = Path(__file__).resolve().parents[2] / "sim" / "model"
FORBIDDEN_PACKAGES = ("sim.driver", "sim.gateways", "sim.backend", "sim.oracle")
# Modules whose use would tie the model to the wall clock or to unseeded randomness.
FORBIDDEN_MODULES = ("time", "random", "uuid", "secrets", "gevent")
FORBIDDEN_CALLS = ("now", "utcnow", "today", "uuid4", "time", "monotonic", "perf_counter")


def _modules() -> list[Path]:
    return sorted(MODEL.glob("*.py"))


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_model_imports_stay_inside(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for name in _imports(tree):
        assert not name.startswith(FORBIDDEN_PACKAGES), f"{path.name} imports {name}"
        assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_model_reads_no_wall_clock(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in FORBIDDEN_CALLS, (
                f"{path.name}:{node.lineno} calls .{node.func.attr}()"
            )


def test_simpy_rt_is_not_imported():
    for path in _modules():
        assert "simpy.rt" not in path.read_text(encoding="utf-8"), path.name
