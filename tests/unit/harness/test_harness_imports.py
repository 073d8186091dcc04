"""The harness stands alone: the bwrap sandbox shows agent_harness and none of hive's other
packages (activities/backends/bwrap_layout.py), so what runs there must not import them, nor the
host's heavy dependencies."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import agent_harness

REPO_ROOT = Path(__file__).resolve().parents[3]
HARNESS_DIR = Path(agent_harness.__file__).parent
# What the sandbox runs: `hive-agent` (cli) and its two commands.
SANDBOX_MODULES = ("cli", "mcp_bridge", "sandbox_run", "version")
HOST_DEPENDENCIES = ("temporalio", "sqlalchemy", "sqlmodel", "fastapi", "uvicorn")


def our_other_packages() -> set[str]:
    """Every package of the hyperhive distribution but the harness, plus the test tree's."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    assert "hyperhive" in packages and "agent_harness" in packages, packages
    return (packages - {"agent_harness"}) | {"tests", "bench"}


FORBIDDEN = frozenset(our_other_packages() | set(HOST_DEPENDENCIES))


def test_the_sandbox_modules_import_nothing_of_ours_anywhere_in_them() -> None:
    """Every import statement, module-level or inside a function (run only by some command)."""
    found = []
    for name in SANDBOX_MODULES:
        path = HARNESS_DIR / f"{name}.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            else:
                continue
            found += [f"{name}: {t}" for t in targets if t.split(".")[0] in FORBIDDEN]
    assert found == []


def test_hive_agent_runs_with_every_other_package_of_ours_unimportable() -> None:
    """As in the sandbox, where they are not there: importing one fails the import at once."""
    code = f"""
import importlib.abc, sys
FORBIDDEN = {sorted(FORBIDDEN)!r}
class Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split('.')[0] in FORBIDDEN:
            raise ModuleNotFoundError(f'{{fullname}} is not in the sandbox', name=fullname)
        return None
sys.meta_path.insert(0, Hidden())
{"".join(f"import agent_harness.{m}{chr(10)}" for m in SANDBOX_MODULES)}
from agent_harness.cli import main
sys.exit(main(['--version']))
"""
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert (out.returncode, out.stderr) == (0, ""), out
    assert out.stdout.startswith("hive-agent "), out.stdout
    assert out.stdout.strip() != "hive-agent unknown", "the version comes from the distribution"
