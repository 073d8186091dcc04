"""hm1nd attacks the object store of a config repo it proposes from (issue 13, "the approved diff
is not what is applied").

hm1nd owns /agents/<name>/.git entirely, objects included. Each case runs the calls the config
flow makes, in its order: the request (validate, which takes the commit into hive-c0re's
storage), the approval's diff, the apply after ◆ APPR0VE. What the operator saw must be, byte
for byte, what is applied; a store that lies is refused with a coded error and changes nothing.
"""

from __future__ import annotations

import os
import subprocess
import zlib
from pathlib import Path

import pytest

from hyperhive import config_repo as cr
from hyperhive.repo_git import RepoError

REV = "1" * 40
HONEST = "{ ... }: { hive.memory = 4096; }\n"
EVIL = "{ ... }: { networking.firewall.enable = false; }\n"
ENV = {
    "PATH": os.environ.get("PATH", os.defpath),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "hm1nd",
    "GIT_AUTHOR_EMAIL": "hm1nd@hive",
    "GIT_COMMITTER_NAME": "hm1nd",
    "GIT_COMMITTER_EMAIL": "hm1nd@hive",
}


def git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=ENV, input=stdin, capture_output=True, check=True
    )
    return done.stdout.decode().strip()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    for name in ("alice", "bob"):
        cr.init_agent_repos(
            tmp_path, name, purpose="Be attacked.", hyperhive_rev=REV, hyperhive_flake_url="/x"
        )
    return tmp_path


def proposed(state: Path, agent: str = "alice") -> Path:
    return cr.proposed_dir(state, agent)


def honest_commit(state: Path) -> tuple[str, str]:
    """hm1nd's honest change: (commit sha, the new agent.nix blob's id)."""
    repo = proposed(state)
    (repo / "agent.nix").write_text(HONEST)
    git(repo, "commit", "-qam", "more memory")
    return git(repo, "rev-parse", "HEAD"), git(repo, "rev-parse", "HEAD:agent.nix")


def loose_object(state: Path, oid: str, agent: str = "alice") -> Path:
    return proposed(state, agent) / ".git" / "objects" / oid[:2] / oid[2:]


def rewrite_blob(path: Path, text: str) -> None:
    """Overwrite a loose blob in place with other content, as hm1nd can in its own repo."""
    data = text.encode()
    path.chmod(0o644)
    path.write_bytes(zlib.compress(b"blob %d\0" % len(data) + data))


def applied_files(state: Path) -> dict[str, str]:
    repo = cr.applied_dir(state, "alice")
    return {name: (repo / name).read_text() for name in ("agent.nix", "CLAUDE.md")}


def refusal(state: Path, sha: str) -> RepoError:
    before = applied_files(state), git(cr.applied_dir(state, "alice"), "for-each-ref")
    with pytest.raises(RepoError) as info:
        cr.validate_commit(state, "alice", sha)
    after = applied_files(state), git(cr.applied_dir(state, "alice"), "for-each-ref")
    assert after == before, "a refused commit changed hive-c0re's repo"
    assert info.value.hint, info.value
    return info.value


def test_an_object_rewritten_after_the_request_is_not_what_is_applied(state: Path) -> None:
    sha, blob = honest_commit(state)
    assert cr.validate_commit(state, "alice", sha) == ["agent.nix"]  # the request
    shown = cr.diff_against_applied(state, "alice", sha)  # the approval's diff
    assert "+{ ... }: { hive.memory = 4096; }" in shown

    rewrite_blob(loose_object(state, blob), EVIL)
    # git in hm1nd's repo now reads the other content under the approved id...
    assert git(proposed(state), "cat-file", "blob", blob) == EVIL.strip()
    # ...but the diff and the apply come from hive-c0re's copy.
    assert cr.diff_against_applied(state, "alice", sha) == shown
    cr.apply_commit(state, "alice", sha, approver="operator")
    assert applied_files(state)["agent.nix"] == HONEST


def test_the_approved_commit_applies_even_after_hm1nd_deletes_it(state: Path) -> None:
    sha, blob = honest_commit(state)
    cr.validate_commit(state, "alice", sha)
    loose_object(state, blob).unlink()
    loose_object(state, sha).unlink()
    cr.apply_commit(state, "alice", sha, approver="operator")
    assert applied_files(state)["agent.nix"] == HONEST


def test_an_object_rewritten_before_the_request_is_refused(state: Path) -> None:
    sha, blob = honest_commit(state)
    rewrite_blob(loose_object(state, blob), EVIL)
    err = refusal(state, sha)
    assert err.code == "corrupt_object" and blob[:12] in err.what, err.what


def test_a_tree_naming_agent_nix_twice_is_refused(state: Path) -> None:
    # Before: the diff showed both entries and the last one was applied.
    repo = proposed(state)
    honest = git(repo, "hash-object", "-w", "--stdin", stdin=HONEST.encode())
    evil = git(repo, "hash-object", "-w", "--stdin", stdin=EVIL.encode())
    claude_md = git(repo, "rev-parse", "HEAD:CLAUDE.md")
    listing = (
        f"100644 blob {claude_md}\tCLAUDE.md\n"
        f"100644 blob {honest}\tagent.nix\n"
        f"100644 blob {evil}\tagent.nix\n"
    )
    tree = git(repo, "mktree", stdin=listing.encode())
    sha = git(repo, "commit-tree", tree, "-p", "HEAD", "-m", "two agent.nix")
    err = refusal(state, sha)
    assert err.code == "not_config_only" and "more than once" in err.what, err.what


def test_a_rewritten_commit_object_is_refused(state: Path) -> None:
    sha, _ = honest_commit(state)
    path = loose_object(state, sha)
    raw = zlib.decompress(path.read_bytes()).replace(b"more memory", b"less memory")
    path.chmod(0o644)
    path.write_bytes(zlib.compress(raw))
    assert refusal(state, sha).code == "corrupt_object"


def test_alternates_into_another_agents_repo_are_not_followed(state: Path) -> None:
    alice, bob = proposed(state), proposed(state, "bob")
    # A blob that lives only in bob's repo…
    blob = git(bob, "hash-object", "-w", "--stdin", stdin=EVIL.encode())
    # …named by a commit in alice's, which git there resolves through alternates.
    (alice / ".git" / "objects" / "info" / "alternates").write_text(
        str(bob / ".git" / "objects") + "\n"
    )
    listing = git(alice, "ls-tree", "HEAD").replace(git(alice, "rev-parse", "HEAD:agent.nix"), blob)
    tree = git(alice, "mktree", stdin=(listing + "\n").encode())
    sha = git(alice, "commit-tree", tree, "-p", "HEAD", "-m", "borrowed")
    assert git(alice, "cat-file", "blob", f"{sha}:agent.nix") == EVIL.strip()
    err = refusal(state, sha)
    assert err.code == "missing_object" and blob[:12] in err.what, err.what


def test_a_fifo_planted_as_an_object_is_refused_without_waiting(state: Path) -> None:
    sha, blob = honest_commit(state)
    path = loose_object(state, blob)
    path.unlink()
    os.mkfifo(path)
    # Read naively, the FIFO blocks until git's 60 s timeout (git_failed); it is skipped instead.
    assert refusal(state, sha).code == "missing_object"


def test_an_object_symlinked_to_a_host_file_is_refused_saying_so(state: Path) -> None:
    sha, blob = honest_commit(state)
    secret = state / "host-secret"
    secret.write_text("root:$6$hash:19000:0:99999:7:::\n")
    path = loose_object(state, blob)
    path.unlink()
    path.symlink_to(secret)
    err = refusal(state, sha)
    assert err.code == "missing_object", err
    assert "root:" not in err.what and "root:" not in err.hint


def test_an_object_store_too_big_for_a_config_repo_is_refused(state: Path) -> None:
    from hyperhive.proposed_commit import MAX_STORE_FILES

    sha, _ = honest_commit(state)
    junk = proposed(state) / ".git" / "objects" / "ff"
    junk.mkdir(exist_ok=True)
    for i in range(MAX_STORE_FILES):
        (junk / f"{i:038x}").write_bytes(b"x")
    err = refusal(state, sha)
    assert err.code == "too_large" and "object store" in err.what, err.what
