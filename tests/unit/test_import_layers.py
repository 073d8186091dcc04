"""The package layers hold: no package imports one above it (README, "Architecture").

Lowest first: the kernel (`hyperhive`) and the in-sandbox harness (`agent_harness`) import none
of ours; `activities` the kernel (and the harness, for its location); `workflows` the kernel and
activities (typed references); `control` (Temporal's clients) the workflows; `api` the control
layer; the composition root (`hive_c0re`) everything. Every import counts, also one inside a
function or under TYPE_CHECKING: each is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ALLOWED: dict[str, set[str]] = {
    "hyperhive": set(),
    "agent_harness": set(),
    "activities": {"hyperhive", "agent_harness"},
    "workflows": {"hyperhive", "activities"},
    "control": {"hyperhive", "workflows"},
    "api": {"hyperhive", "control"},
    "hive_c0re": {"hyperhive", "agent_harness", "activities", "workflows", "control", "api"},
}


def _imported_packages(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def layer_violations(root: Path) -> list[str]:
    """`<file> imports <package>` for every import of a package the file's layer may not use."""
    violations = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            ours = _imported_packages(path.read_text()) & ALLOWED.keys()
            for imported in sorted(ours - allowed - {package}):
                violations.append(f"{path.relative_to(root)} imports {imported}")
    return violations


def test_no_package_imports_a_layer_above_it() -> None:
    assert layer_violations(ROOT) == []


def test_every_package_of_ours_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - {"tests", "bench"} == set(ALLOWED)


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    for package in ALLOWED:
        (tmp_path / package).mkdir()
    (tmp_path / "hyperhive" / "store.py").write_text(
        "def load():\n    from api.app import build\n    return build\n"
    )
    (tmp_path / "agent_harness" / "cli.py").write_text("import hyperhive\n")
    (tmp_path / "workflows" / "agent.py").write_text("from control.waker import TemporalWaker\n")
    assert layer_violations(tmp_path) == [
        "hyperhive/store.py imports api",
        "agent_harness/cli.py imports hyperhive",
        "workflows/agent.py imports control",
    ]
