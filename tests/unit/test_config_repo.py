"""Config repos and per-agent flakes (hyperhive.config_repo, agent_flake, activities/repos.py)
with real git.

Sha input policy: only 7-40 hex digits are accepted (bad_sha otherwise); refs and revision
expressions such as HEAD, main or HEAD~1 are refused, because the operator approves one exact
commit, and a short sha is resolved among the proposed repo's objects only (a branch named like
a sha cannot shadow it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.repos import RepoActivities
from hyperhive import agent_flake as af
from hyperhive import config_repo as cr
from hyperhive.config_repo import CONFIG_FILES
from hyperhive.repo_git import RepoError
from hyperhive.repo_models import (
    ApplyInput,
    CommitRef,
    InitReposInput,
    RevertInput,
    RevInput,
)
from hyperhive.settings import HiveSettings

AGENT = "alpha"
REV = "1" * 40
REV2 = "2" * 40
URL = "/src/hyperhive"
NIX_INSTANTIATE = shutil.which("nix-instantiate")
needs_nix = pytest.mark.skipif(NIX_INSTANTIATE is None, reason="nix-instantiate is not installed")

HM1ND_ENV = {
    "PATH": os.environ.get("PATH", os.defpath),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "LC_ALL": "C",
}


def git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    """git as hm1nd would run it in /agents/<name> (identity from the repo's local config)."""
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        env=HM1ND_ENV,
        input=stdin,
        capture_output=True,
        check=True,
    )
    return proc.stdout.decode().strip()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    cr.init_agent_repos(
        state, AGENT, purpose="Review pull requests.", hyperhive_rev=REV, hyperhive_flake_url=URL
    )
    return state


def proposed(state: Path) -> Path:
    return state / "proposed" / AGENT


def applied(state: Path) -> Path:
    return state / "applied" / AGENT


def commit_change(state: Path, path: str, text: str, message: str = "change") -> str:
    repo = proposed(state)
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    git(repo, "add", "--", path)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def set_model(state: Path, model: str) -> str:
    """hm1nd's most common change: the agent's model, in its Claude Code settings.json."""
    repo = proposed(state)
    settings = json.loads((repo / "settings.json").read_text())
    settings["model"] = model
    return commit_change(state, "settings.json", json.dumps(settings, indent=2) + "\n", model)


def commit_tree(state: Path, entries: list[tuple[str, str, str, str]]) -> str:
    """A commit whose top-level tree is exactly `entries` (mode, type, oid, name), made with
    git mktree, which (unlike `git add`) accepts names such as `..` and `.git`."""
    repo = proposed(state)
    listing = "".join(f"{mode} {kind} {oid}\t{name}\n" for mode, kind, oid, name in entries)
    tree = git(repo, "mktree", stdin=listing.encode())
    return git(repo, "commit-tree", tree, "-p", "HEAD", "-m", "crafted")


def config_entries(state: Path) -> list[tuple[str, str, str, str]]:
    repo = proposed(state)
    return [
        ("100644", "blob", git(repo, "rev-parse", f"HEAD:{name}"), name) for name in CONFIG_FILES
    ]


def refused(state: Path, sha: str) -> RepoError:
    with pytest.raises(RepoError) as info:
        cr.validate_commit(state, AGENT, sha)
    return info.value


# --- init -------------------------------------------------------------------------------------


def test_init_creates_both_repos_with_the_initial_config(state: Path) -> None:
    p, a = proposed(state), applied(state)
    assert git(p, "ls-files").split() == ["CLAUDE.md", "agent.nix", "settings.json"]
    assert sorted(git(a, "ls-files").split()) == sorted(
        [".hive-pin.json", "CLAUDE.md", "agent.nix", "flake.nix", "settings.json"]
    )
    for name in CONFIG_FILES:
        assert (p / name).read_bytes() == (a / name).read_bytes()
    agent_nix = (p / "agent.nix").read_text()
    assert "NixOS module" in agent_nix and "settings.json" in agent_nix
    assert json.loads((p / "settings.json").read_text()) == {
        "permissions": {"allow": [], "deny": []}
    }
    claude_md = (p / "CLAUDE.md").read_text()
    assert "Review pull requests." in claude_md and "**alpha**" in claude_md
    # committed, clean, by hive-c0re; hm1nd's later commits carry hm1nd's name
    assert git(p, "status", "--porcelain") == "" and git(a, "status", "--porcelain") == ""
    assert git(a, "log", "-1", "--format=%an <%ae>|%cn <%ce>") == (
        "hive-c0re <hive-c0re@localhost>|hive-c0re <hive-c0re@localhost>"
    )
    assert git(p, "config", "user.name") == "hm1nd"
    assert cr.recorded_rev(state, AGENT) == REV
    pin = json.loads((a / ".hive-pin.json").read_text())
    assert pin["hyperhive_flake_url"] == URL and pin["hyperhive_rev"] == REV
    # the initial proposed commit has nothing to apply
    assert cr.validate_commit(state, AGENT, git(p, "rev-parse", "HEAD")) == []


def test_init_is_idempotent_and_keeps_existing_repos(state: Path) -> None:
    heads = (git(proposed(state), "rev-parse", "HEAD"), cr.applied_head(state, AGENT))
    cr.init_agent_repos(
        state, AGENT, purpose="Something else.", hyperhive_rev=REV2, hyperhive_flake_url=URL
    )
    assert (git(proposed(state), "rev-parse", "HEAD"), cr.applied_head(state, AGENT)) == heads
    assert "Review pull requests." in (applied(state) / "CLAUDE.md").read_text()
    assert cr.recorded_rev(state, AGENT) == REV
    assert not any((state / ".repo-tmp").iterdir())


def test_init_recreates_a_missing_proposed_repo_and_refuses_a_foreign_dir(
    state: Path, tmp_path: Path
) -> None:
    shutil.rmtree(proposed(state))
    cr.init_agent_repos(state, AGENT, purpose="p", hyperhive_rev=REV, hyperhive_flake_url=URL)
    assert (proposed(state) / "agent.nix").is_file()

    junk = state / "proposed" / "beta"
    junk.mkdir()
    (junk / "agent.nix").write_text("{ }\n")
    with pytest.raises(RepoError) as info:
        cr.init_agent_repos(state, "beta", purpose="p", hyperhive_rev=REV, hyperhive_flake_url=URL)
    assert info.value.code == "not_a_repo"


def test_manager_gets_manager_instructions(tmp_path: Path) -> None:
    cr.init_agent_repos(
        tmp_path, "hm1nd", purpose="Run the swarm.", hyperhive_rev=REV, hyperhive_flake_url=URL
    )
    text = (tmp_path / "proposed" / "hm1nd" / "CLAUDE.md").read_text()
    assert "request_apply_commit" in text and "Run the swarm." in text


def test_bad_agent_names_are_refused(tmp_path: Path) -> None:
    for name in ("../x", "Alpha", "toolongname", ""):
        with pytest.raises(RepoError) as info:
            cr.init_agent_repos(
                tmp_path, name, purpose="", hyperhive_rev=REV, hyperhive_flake_url=URL
            )
        assert info.value.code == "bad_agent"
    assert not (tmp_path / "proposed").exists()


# --- the flake ----------------------------------------------------------------------------------


def nix_eval(expr_file: Path) -> object:
    assert NIX_INSTANTIATE is not None
    out = subprocess.run(
        [NIX_INSTANTIATE, "--eval", "--strict", "--json", str(expr_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@needs_nix
def test_generated_flake_and_initial_agent_nix_parse_with_nix(state: Path) -> None:
    assert NIX_INSTANTIATE is not None
    for name in ("flake.nix", "agent.nix"):
        subprocess.run(
            [NIX_INSTANTIATE, "--parse", str(applied(state) / name)],
            capture_output=True,
            check=True,
        )


@needs_nix
def test_generated_flake_wires_the_agent_module_and_agent_nix(state: Path, tmp_path: Path) -> None:
    flake = applied(state) / "flake.nix"
    expr = tmp_path / "eval.nix"
    expr.write_text(
        f"""
let
  flake = import {flake};
  out = flake.outputs {{
    self = {{ }};
    hyperhive = {{ nixosModules.agent = "HYPERHIVE-AGENT-MODULE"; }};
    nixpkgs = {{ lib.nixosSystem = args: args; }};
  }};
  sys = out.nixosConfigurations.container;
in
{{
  inputs = flake.inputs;
  system = sys.system;
  modules = map (m: if builtins.isPath m then "path:" + baseNameOf m else m) sys.modules;
}}
"""
    )
    result = nix_eval(expr)
    assert result == {
        "inputs": {
            "hyperhive": {"url": f"git+file://{URL}?rev={REV}"},
            "nixpkgs": {"follows": "hyperhive/nixpkgs"},
        },
        "system": af.host_nix_system(),
        "modules": [
            "HYPERHIVE-AGENT-MODULE",
            "path:agent.nix",
            {"hyperhive": {"agent": {"name": AGENT}}},
        ],
    }


NIX = shutil.which("nix")


@pytest.mark.skipif(
    NIX is None or not os.access("/nix/store", os.W_OK),
    reason="needs nix with a writable /nix/store (flake evaluation copies sources there)",
)
def test_the_applied_repo_evaluates_as_a_flake(state: Path, tmp_path: Path) -> None:
    """Real flake semantics (git+file source, inputs.follows) against stub inputs: a stub
    hyperhive flake with a stub nixpkgs whose lib.nixosSystem returns its arguments."""
    assert NIX is not None
    (tmp_path / "nixpkgs").mkdir()
    (tmp_path / "nixpkgs" / "flake.nix").write_text(
        "{ outputs = { self }: { lib.nixosSystem = args: { inherit (args) system;"
        " modules = map (m: if builtins.isPath m then baseNameOf m else m) args.modules; }; }; }\n"
    )
    (tmp_path / "hyperhive").mkdir()
    (tmp_path / "hyperhive" / "flake.nix").write_text(
        f'{{ inputs.nixpkgs.url = "path:{tmp_path / "nixpkgs"}";'
        ' outputs = { self, nixpkgs }: { nixosModules.agent = "AGENT-MODULE"; }; }\n'
    )
    out = subprocess.run(
        [
            NIX,
            "eval",
            "--json",
            "--no-write-lock-file",
            "--override-input",
            "hyperhive",
            f"path:{tmp_path / 'hyperhive'}",
            f"{applied(state)}#nixosConfigurations.container",
        ],
        env={
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(tmp_path),
            "NIX_CONFIG": "experimental-features = nix-command flakes",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "system": af.host_nix_system(),
        "modules": ["AGENT-MODULE", "agent.nix", {"hyperhive": {"agent": {"name": AGENT}}}],
    }
    assert git(applied(state), "status", "--porcelain") == ""


@needs_nix
def test_initial_agent_nix_is_an_empty_module(state: Path, tmp_path: Path) -> None:
    expr = tmp_path / "eval.nix"
    expr.write_text(f"import {applied(state) / 'agent.nix'} {{ pkgs = {{ }}; lib = {{ }}; }}\n")
    assert nix_eval(expr) == {}


def test_flake_input_url_pins_the_revision() -> None:
    assert af.flake_input_url("/src/hh", REV) == f"git+file:///src/hh?rev={REV}"
    assert af.flake_input_url("github:o/hh", REV) == f"github:o/hh?rev={REV}"
    assert af.flake_input_url("git+https://x/hh?ref=main", REV) == (
        f"git+https://x/hh?ref=main&rev={REV}"
    )
    # not a git commit (a package version): the URL is used as given; a store path by content
    assert af.flake_input_url("github:o/hh", "0.1.0") == "github:o/hh"
    assert af.flake_input_url("/nix/store/abc-source", "0.1.0") == "path:/nix/store/abc-source"
    with pytest.raises(RepoError) as info:
        af.flake_input_url("", REV)
    assert info.value.code == "no_flake_url"


@needs_nix
def test_flake_strings_are_escaped(tmp_path: Path) -> None:
    assert NIX_INSTANTIATE is not None
    text = af.generate_flake(
        AGENT, hyperhive_flake_url='github:o/"${evil}"\\x', hyperhive_rev="v1", system="x"
    )
    (tmp_path / "flake.nix").write_text(text)
    expr = tmp_path / "eval.nix"
    expr.write_text(f"(import {tmp_path / 'flake.nix'}).inputs.hyperhive.url\n")
    assert nix_eval(expr) == 'github:o/"${evil}"\\x'


# --- resolving and validating proposed commits --------------------------------------------------


def test_resolve_sha_accepts_short_and_full_hex_only(state: Path) -> None:
    full = set_model(state, "opus")
    assert cr.resolve_sha(state, AGENT, full) == full
    assert cr.resolve_sha(state, AGENT, full[:7]) == full
    assert cr.resolve_sha(state, AGENT, full[:12].upper()) == full
    for bad in ("xyz", full[:6], full + "0", "HEAD", "HEAD~1", "main", "", f"{full[:7]} ", "-v"):
        with pytest.raises(RepoError) as info:
            cr.resolve_sha(state, AGENT, bad)
        assert info.value.code == "bad_sha", bad


def test_unknown_sha(state: Path) -> None:
    assert refused(state, "0" * 40).code == "unknown_sha"
    assert refused(state, "deadbeefdeadbeef").code == "unknown_sha"
    # a blob or tree id is not a commit
    blob = git(proposed(state), "rev-parse", "HEAD:agent.nix")
    assert refused(state, blob).code == "unknown_sha"


def test_a_sha_known_only_to_the_applied_repo_is_unknown(state: Path) -> None:
    assert refused(state, cr.applied_head(state, AGENT)).code == "unknown_sha"


def test_a_branch_named_like_a_short_sha_does_not_shadow_it(state: Path) -> None:
    first = git(proposed(state), "rev-parse", "HEAD")
    second = set_model(state, "opus")
    git(proposed(state), "branch", second[:7], first)
    assert cr.resolve_sha(state, AGENT, second[:7]) == second


def test_validate_returns_the_changed_files(state: Path) -> None:
    sha = set_model(state, "opus")
    assert cr.validate_commit(state, AGENT, sha) == ["settings.json"]
    text = (proposed(state) / "CLAUDE.md").read_text() + "\nBe brief.\n"
    sha2 = commit_change(state, "CLAUDE.md", text)
    assert cr.validate_commit(state, AGENT, sha2[:10]) == ["CLAUDE.md", "settings.json"]


def test_validate_refuses_a_commit_adding_another_file(state: Path) -> None:
    sha = commit_change(state, "notes.txt", "hello\n")
    err = refused(state, sha)
    assert err.code == "not_config_only" and "notes.txt" in str(err)


def test_validate_refuses_a_file_named_like_another_agent(state: Path) -> None:
    sha = commit_change(state, "beta", "{ }\n")
    err = refused(state, sha)
    assert err.code == "not_config_only" and "another agent" in str(err)


def test_validate_refuses_a_subdirectory(state: Path) -> None:
    err = refused(state, commit_change(state, "beta/agent.nix", "{ }\n"))
    assert err.code == "not_config_only" and "beta/ is a directory" in str(err)


def test_validate_refuses_a_symlink_even_named_agent_nix(state: Path) -> None:
    repo = proposed(state)
    (repo / "agent.nix").unlink()
    (repo / "agent.nix").symlink_to("/etc/passwd")
    git(repo, "add", "agent.nix")
    git(repo, "commit", "-q", "-m", "link")
    err = refused(state, git(repo, "rev-parse", "HEAD"))
    assert err.code == "symlink" and "agent.nix" in str(err)


def test_validate_refuses_a_symlink_to_another_agents_repo(state: Path) -> None:
    repo = proposed(state)
    (repo / "CLAUDE.md").unlink()
    (repo / "CLAUDE.md").symlink_to("../beta/CLAUDE.md")
    git(repo, "add", "CLAUDE.md")
    git(repo, "commit", "-q", "-m", "link")
    assert refused(state, git(repo, "rev-parse", "HEAD")).code == "symlink"


@pytest.mark.parametrize("name", ["..", ".git", ".GIT"])
def test_validate_refuses_paths_outside(state: Path, name: str) -> None:
    entries = config_entries(state)
    sha = commit_tree(state, [*entries, ("100644", "blob", entries[0][2], name)])
    err = refused(state, sha)
    assert err.code == "path_outside" and repr(name) in str(err)


def test_validate_refuses_a_submodule(state: Path) -> None:
    head = git(proposed(state), "rev-parse", "HEAD")
    sha = commit_tree(state, [*config_entries(state), ("160000", "commit", head, "sub")])
    assert refused(state, sha).code == "not_config_only"


def test_validate_refuses_a_missing_config_file(state: Path) -> None:
    git(proposed(state), "rm", "-q", "CLAUDE.md")
    git(proposed(state), "commit", "-q", "-m", "rm")
    err = refused(state, git(proposed(state), "rev-parse", "HEAD"))
    assert err.code == "missing_config" and "CLAUDE.md" in str(err)


def test_validate_refuses_binary_and_huge_files(state: Path) -> None:
    repo = proposed(state)
    (repo / "agent.nix").write_bytes(b"\xff\xfe\x00binary")
    git(repo, "commit", "-qam", "binary")
    assert refused(state, git(repo, "rev-parse", "HEAD")).code == "not_text"
    (repo / "agent.nix").write_text("#" * (cr.MAX_CONFIG_BYTES + 1))
    git(repo, "commit", "-qam", "huge")
    assert refused(state, git(repo, "rev-parse", "HEAD")).code == "too_large"


def test_a_symlinked_proposed_repo_is_refused(state: Path) -> None:
    sha = git(proposed(state), "rev-parse", "HEAD")
    other = state / "elsewhere"
    proposed(state).rename(other)
    proposed(state).symlink_to(other)
    assert refused(state, sha).code == "no_repo"


def test_the_proposed_repos_git_config_is_never_obeyed(state: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    repo = proposed(state)
    sha = set_model(state, "opus")
    # a replace ref would make `sha` read as another commit; it is ignored
    git(repo, "replace", sha, git(repo, "rev-parse", "HEAD~1"))
    for key in ("core.fsmonitor", "diff.external", "core.pager", "gpg.program"):
        git(repo, "config", key, str(script))
    git(repo, "config", "log.showSignature", "true")
    hooks = repo / ".git" / "hooks"
    for hook in ("post-checkout", "pre-commit", "post-commit", "reference-transaction"):
        (hooks / hook).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (hooks / hook).chmod(0o755)
    assert not marker.exists()
    assert cr.validate_commit(state, AGENT, sha) == ["settings.json"]
    assert '"opus"' in cr.diff_against_applied(state, AGENT, sha)
    assert cr.apply_commit(state, AGENT, sha, approver="ops") is not None
    assert not marker.exists()


# --- diff, apply, revert ----------------------------------------------------------------------


def test_diff_shows_the_change_against_applied(state: Path) -> None:
    sha = set_model(state, "opus")
    diff = cr.diff_against_applied(state, AGENT, sha[:8])
    assert "--- a/settings.json" in diff and "+++ b/settings.json" in diff
    assert '+  "model": "opus"' in diff
    assert "CLAUDE.md" not in diff and "agent.nix" not in diff
    assert cr.diff_against_applied(state, AGENT, git(proposed(state), "rev-parse", "HEAD~1")) == ""


def test_diff_refuses_an_invalid_commit(state: Path) -> None:
    with pytest.raises(RepoError) as info:
        cr.diff_against_applied(state, AGENT, commit_change(state, "x", "y"))
    assert info.value.code == "not_config_only"


def test_apply_copies_commits_and_is_idempotent(state: Path) -> None:
    before = cr.applied_head(state, AGENT)
    flake = (applied(state) / "flake.nix").read_bytes()
    sha = set_model(state, "opus")
    new = cr.apply_commit(state, AGENT, sha[:9], approver="ops\nsneaky")
    assert new is not None and new == cr.applied_head(state, AGENT) != before
    assert git(applied(state), "rev-parse", "HEAD~1") == before
    assert (applied(state) / "agent.nix").read_bytes() == (
        proposed(state) / "agent.nix"
    ).read_bytes()
    assert (applied(state) / "flake.nix").read_bytes() == flake
    message = git(applied(state), "log", "-1", "--format=%B")
    assert sha in message and "approved by ops sneaky" in message
    assert f"Proposed-Commit: {sha}" in message and "Approved-By: ops sneaky" in message
    assert git(applied(state), "status", "--porcelain") == ""
    assert git(applied(state), "log", "-1", "--format=%cn") == "hive-c0re"
    # again: nothing to do
    assert cr.apply_commit(state, AGENT, sha, approver="ops") is None
    assert cr.applied_head(state, AGENT) == new
    assert cr.validate_commit(state, AGENT, sha) == []


def test_apply_finishes_after_an_interrupted_attempt(state: Path) -> None:
    sha = set_model(state, "opus")
    # a crash after writing the file but before committing
    (applied(state) / "agent.nix").write_text("half-written")
    (applied(state) / "flake.nix").write_text("garbage")
    new = cr.apply_commit(state, AGENT, sha, approver="ops")
    assert new is not None
    assert git(applied(state), "status", "--porcelain") == ""
    assert "hyperhive.nixosModules.agent" in (applied(state) / "flake.nix").read_text()


def test_apply_refuses_an_invalid_commit_and_leaves_applied_alone(state: Path) -> None:
    before = cr.applied_head(state, AGENT)
    repo = proposed(state)
    (repo / "agent.nix").unlink()
    (repo / "agent.nix").symlink_to("/etc/shadow")
    git(repo, "commit", "-qam", "link")
    with pytest.raises(RepoError) as info:
        cr.apply_commit(state, AGENT, git(repo, "rev-parse", "HEAD"), approver="ops")
    assert info.value.code == "symlink"
    assert cr.applied_head(state, AGENT) == before
    assert not (applied(state) / "agent.nix").is_symlink()


def test_revert_restores_and_is_idempotent(state: Path) -> None:
    before = cr.applied_head(state, AGENT)
    original = (applied(state) / "agent.nix").read_bytes()
    cr.apply_commit(state, AGENT, set_model(state, "opus"), approver="ops")
    cr.revert_applied(state, AGENT, before)
    assert cr.applied_head(state, AGENT) == before
    assert (applied(state) / "agent.nix").read_bytes() == original
    cr.revert_applied(state, AGENT, before[:10])
    assert cr.applied_head(state, AGENT) == before
    assert git(applied(state), "status", "--porcelain") == ""
    for bad, code in (("HEAD~1", "bad_sha"), ("0" * 40, "unknown_sha")):
        with pytest.raises(RepoError) as info:
            cr.revert_applied(state, AGENT, bad)
        assert info.value.code == code


def test_set_recorded_rev_regenerates_the_flake(state: Path) -> None:
    before = cr.applied_head(state, AGENT)
    new = cr.set_recorded_rev(state, AGENT, REV2)
    assert new is not None and new != before
    assert cr.recorded_rev(state, AGENT) == REV2
    flake = (applied(state) / "flake.nix").read_text()
    assert f"?rev={REV2}" in flake and REV not in flake
    assert git(applied(state), "status", "--porcelain") == ""
    assert cr.set_recorded_rev(state, AGENT, REV2) is None
    # a new flake URL can be given; otherwise the recorded one is kept
    cr.set_recorded_rev(state, AGENT, REV, hyperhive_flake_url="github:o/hh")
    assert f"github:o/hh?rev={REV}" in (applied(state) / "flake.nix").read_text()
    # the config files were not touched
    assert git(applied(state), "diff", "--stat", before, "HEAD", "--", *CONFIG_FILES) == ""


def test_operations_on_a_missing_agent_say_no_repo(tmp_path: Path) -> None:
    for call in (
        lambda: cr.applied_head(tmp_path, AGENT),
        lambda: cr.validate_commit(tmp_path, AGENT, "a" * 40),
        lambda: cr.recorded_rev(tmp_path, AGENT),
    ):
        with pytest.raises(RepoError) as info:
            call()
        assert info.value.code == "no_repo"


def test_proposed_head_reads_hm1nds_checked_out_commit(state: Path) -> None:
    repo = proposed(state)
    assert cr.proposed_head(state, AGENT) == git(repo, "rev-parse", "HEAD")
    sha = set_model(state, "opus")
    assert cr.proposed_head(state, AGENT) == sha
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert cr.proposed_head(state, AGENT) == sha
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    assert cr.proposed_head(state, AGENT) == git(repo, "rev-parse", "HEAD")
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/../../../../etc/passwd\n")
    with pytest.raises(RepoError) as info:
        cr.proposed_head(state, AGENT)
    assert info.value.code == "unknown_sha"


def test_hyperhive_revision_is_this_checkouts_head() -> None:
    checkout = af.hyperhive_checkout()
    if checkout is None:
        import hyperhive

        assert af.hyperhive_revision() == hyperhive.__version__
    else:
        assert af.hyperhive_revision() == git(checkout, "rev-parse", "HEAD")


# --- activities -------------------------------------------------------------------------------


async def test_activities_wrap_the_helpers(tmp_path: Path) -> None:
    acts = RepoActivities(
        HiveSettings(state_dir=tmp_path), hyperhive_flake_url=URL, hyperhive_rev=REV
    )
    assert {a.__name__ for a in acts.all()} == {
        "init_agent_repos",
        "validate_commit",
        "diff_against_applied",
        "apply_commit",
        "revert_applied",
        "applied_head",
        "recorded_rev",
        "set_recorded_rev",
    }
    env = ActivityEnvironment()
    await env.run(acts.init_agent_repos, InitReposInput(agent=AGENT, purpose="p"))
    base = await env.run(acts.applied_head, AGENT)
    sha = set_model(tmp_path, "opus")

    check = await env.run(acts.validate_commit, CommitRef(agent=AGENT, sha=sha[:7]))
    assert check.full_sha == sha and check.files == ["settings.json"] and '"opus"' in check.diff
    assert await env.run(acts.diff_against_applied, CommitRef(agent=AGENT, sha=sha)) == check.diff

    done = await env.run(acts.apply_commit, ApplyInput(agent=AGENT, sha=sha, approver="ops"))
    assert done != base and done == cr.applied_head(tmp_path, AGENT)
    again = await env.run(acts.apply_commit, ApplyInput(agent=AGENT, sha=sha, approver="ops"))
    assert again == done

    await env.run(acts.revert_applied, RevertInput(agent=AGENT, to_sha=base))
    assert await env.run(acts.applied_head, AGENT) == base

    assert await env.run(acts.recorded_rev, AGENT) == REV
    pinned = await env.run(acts.set_recorded_rev, RevInput(agent=AGENT, rev=REV2))
    assert pinned != base and await env.run(acts.recorded_rev, AGENT) == REV2
    # empty rev = this hyperhive's (as configured)
    assert await env.run(acts.set_recorded_rev, RevInput(agent=AGENT)) != pinned
    assert await env.run(acts.recorded_rev, AGENT) == REV


async def test_activity_errors_are_typed_and_non_retryable(tmp_path: Path) -> None:
    acts = RepoActivities(
        HiveSettings(state_dir=tmp_path), hyperhive_flake_url=URL, hyperhive_rev=REV
    )
    env = ActivityEnvironment()
    await env.run(acts.init_agent_repos, InitReposInput(agent=AGENT, purpose="p"))
    with pytest.raises(ApplicationError) as info:
        await env.run(acts.validate_commit, CommitRef(agent=AGENT, sha="HEAD~1"))
    assert info.value.type == "RepoError:bad_sha" and info.value.non_retryable
    assert "7 to 40 hex digits" in info.value.message
    sha = commit_change(tmp_path, "notes.txt", "x")
    with pytest.raises(ApplicationError) as info:
        await env.run(acts.apply_commit, ApplyInput(agent=AGENT, sha=sha, approver="ops"))
    assert info.value.type == "RepoError:not_config_only" and info.value.non_retryable
    assert RepoError("git_failed", "x").retryable


# --- settings.json: Claude Code's settings beside agent.nix and CLAUDE.md -------------------------


def test_a_settings_json_that_claude_would_misread_is_refused_saying_why(state: Path) -> None:
    for text, why in (
        ("{ model: opus }", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"permissions": {"defaultMode": "yolo"}}', "defaultMode 'yolo'"),
        ('{"permissions": {"deny": "Bash"}}', "permissions.deny must be a list"),
        ('{"model": 3}', "model must be a model name"),
    ):
        err = refused(state, commit_change(state, "settings.json", text))
        assert err.code == "bad_settings" and why in err.what, (text, err.what)
        assert err.hint


def test_settings_json_is_optional_and_dropping_it_is_a_change_that_applies(state: Path) -> None:
    """Repos made before settings.json existed have only agent.nix and CLAUDE.md."""
    git(proposed(state), "rm", "-q", "settings.json")
    git(proposed(state), "commit", "-q", "-m", "no settings")
    sha = git(proposed(state), "rev-parse", "HEAD")
    assert cr.validate_commit(state, AGENT, sha) == ["settings.json"]
    assert cr.apply_commit(state, AGENT, sha, approver="ops") is not None
    assert not (applied(state) / "settings.json").exists()
    assert "settings.json" not in git(applied(state), "ls-files").split()
    assert cr.applied_claude_files(state, AGENT).settings is None


def test_a_tree_naming_a_config_file_twice_is_refused(state: Path) -> None:
    entries = config_entries(state)
    err = refused(state, commit_tree(state, [*entries, entries[0]]))
    assert err.code == "not_config_only" and "more than once" in err.what


def test_applied_claude_files_are_what_was_approved(state: Path) -> None:
    before = cr.applied_claude_files(state, AGENT)
    assert b"Review pull requests." in before.instructions
    assert before.settings is not None and json.loads(before.settings)["permissions"]
    sha = set_model(state, "opus")
    # Proposed, not applied: the turn still gets the applied files.
    assert cr.applied_claude_files(state, AGENT) == before
    cr.apply_commit(state, AGENT, sha, approver="ops")
    after = cr.applied_claude_files(state, AGENT)
    assert after.settings is not None and json.loads(after.settings)["model"] == "opus"
