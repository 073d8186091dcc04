"""The pure builders of a claude turn (argv, MCP config, environment, session file path)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from activities.claude_command import (
    claude_argv,
    claude_env,
    hive_mcp_config,
    project_dir_name,
    session_exists,
    session_file,
)

SID = "0b6f3c2e-6a52-4b1e-9d35-5c8f0e0c1a11"


def flag_values(argv: list[str], flag: str) -> list[str]:
    """The values after ``flag`` up to the next flag."""
    i = argv.index(flag) + 1
    values = []
    while i < len(argv) and not argv[i].startswith("--"):
        values.append(argv[i])
        i += 1
    return values


def test_first_turn_argv() -> None:
    config = hive_mcp_config(env={"HIVE_AGENT": "alice"})
    argv = claude_argv("/bin/claude", session_id=SID, resume=False, mcp_config=config)
    assert argv[:5] == ["/bin/claude", "-p", "--output-format", "stream-json", "--verbose"]
    assert flag_values(argv, "--session-id") == [SID]
    assert "--resume" not in argv
    assert json.loads(flag_values(argv, "--mcp-config")[0]) == config
    assert "--strict-mcp-config" in argv
    assert flag_values(argv, "--allowedTools") == ["mcp__hive"]
    assert flag_values(argv, "--permission-mode") == ["default"]
    for absent in (
        "--model",
        "--max-turns",
        "--append-system-prompt",
        "--append-system-prompt-file",
        "--settings",
        "--setting-sources",
        "--add-dir",
    ):
        assert absent not in argv
    # No positional prompt: it goes on stdin.
    assert all(
        a.startswith("-") or argv[i - 1].startswith("-") or i == 0 for i, a in enumerate(argv)
    )


def test_resume_and_options() -> None:
    argv = claude_argv(
        Path("/opt/claude"),
        session_id=SID,
        resume=True,
        mcp_config={"mcpServers": {}},
        model="sonnet",
        permission_mode="bypassPermissions",
        allowed_tools=("mcp__hive", "Bash(git log:*)"),
        max_turns=5,
        append_system_prompt="- be brief",
    )
    assert argv[0] == "/opt/claude"
    assert flag_values(argv, "--resume") == [SID]
    assert "--session-id" not in argv
    assert flag_values(argv, "--model") == ["sonnet"]
    assert flag_values(argv, "--max-turns") == ["5"]
    assert argv[argv.index("--append-system-prompt") + 1] == "- be brief"
    assert flag_values(argv, "--permission-mode") == ["bypassPermissions"]
    # Variadic flags come last so nothing after them can be swallowed.
    assert argv[-3:] == ["--allowedTools", "mcp__hive", "Bash(git log:*)"]


def test_the_agents_own_config_and_only_it() -> None:
    """CLAUDE.md is appended to the system prompt; settings.json is the only settings source (the
    agent could write ~/.claude/settings.json or /work/.claude itself); hm1nd gets /agents."""
    argv = claude_argv(
        "claude",
        session_id=SID,
        resume=False,
        mcp_config={},
        append_system_prompt_file="/hive/config/CLAUDE.md",
        settings_file="/hive/config/settings.json",
        add_dirs=("/agents",),
    )
    assert flag_values(argv, "--append-system-prompt-file") == ["/hive/config/CLAUDE.md"]
    assert flag_values(argv, "--settings") == ["/hive/config/settings.json"]
    assert argv[argv.index("--setting-sources") + 1] == ""
    assert flag_values(argv, "--add-dir") == ["/agents"]
    # Variadic --add-dir is followed only by flags.
    assert argv[argv.index("--add-dir") + 2].startswith("--")


def test_without_a_sandbox_claude_is_not_told_it_has_one() -> None:
    """IS_SANDBOX lets root bypass permissions; without a sandbox claude keeps refusing that."""
    assert "IS_SANDBOX" not in claude_env({}, home="/h", sandboxed=False)
    assert claude_env({}, home="/h")["IS_SANDBOX"] == "1"


def test_no_allowed_tools() -> None:
    argv = claude_argv("claude", session_id=SID, resume=False, mcp_config={}, allowed_tools=())
    assert "--allowedTools" not in argv
    assert argv[-1] == "--strict-mcp-config"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"session_id": "not-a-uuid"},
        {"session_id": ""},
        {"permission_mode": "yolo"},
        {"max_turns": 0},
    ],
)
def test_argv_rejects(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"session_id": SID, "resume": False, "mcp_config": {}, **kwargs}
    with pytest.raises(ValueError):
        claude_argv("claude", **args)  # type: ignore[arg-type]


def test_hive_mcp_config() -> None:
    assert hive_mcp_config(env={"A": "1"}) == {
        "mcpServers": {
            "hive": {"type": "stdio", "command": "hive-agent", "args": ["mcp"], "env": {"A": "1"}}
        }
    }
    custom = hive_mcp_config("/usr/bin/python3", ("-m", "agent_harness.cli", "mcp"), env={})
    assert custom["mcpServers"]["hive"]["args"] == ["-m", "agent_harness.cli", "mcp"]


def test_claude_env() -> None:
    base = {
        "PATH": "/bin",
        "HOME": "/root",
        "CLAUDECODE": "1",
        "CLAUDE_CODE_ENTRYPOINT": "cli",
        "CLAUDE_CONFIG_DIR": "/elsewhere",
        "CLAUDE_CODE_MAX_RETRIES": "10",
        "ANTHROPIC_BASE_URL": "http://proxy",
    }
    env = claude_env(base, home="/agent/home", extra={"CLAUDE_CODE_OAUTH_TOKEN": "tok", "X": "y"})
    assert env == {
        "PATH": "/bin",
        "HOME": "/agent/home",
        "ANTHROPIC_BASE_URL": "http://proxy",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "IS_SANDBOX": "1",
        "MCP_CONNECTION_NONBLOCKING": "0",
        "MCP_CONNECT_TIMEOUT_MS": "60000",
        "CLAUDE_CODE_OAUTH_TOKEN": "tok",
        "X": "y",
    }
    # extra wins, even over our defaults; base is not modified.
    overridden = claude_env(base, home="/h", extra={"CLAUDE_CODE_MAX_RETRIES": "2"})
    assert overridden["CLAUDE_CODE_MAX_RETRIES"] == "2"
    assert base["CLAUDECODE"] == "1"
    assert claude_env({}, home="/h")["HOME"] == "/h"


@pytest.mark.parametrize(
    ("cwd", "name"),
    [
        # All observed with claude 2.1.197 (tests/integration/test_session_files.py checks them).
        ("/tmp/hh.st0c8otw/my.proj_dir/a b", "-tmp-hh-st0c8otw-my-proj-dir-a-b"),
        ("/tmp/hh.z01s8oal/a.b_c-d", "-tmp-hh-z01s8oal-a-b-c-d"),
        ("/tmp/hh.z01s8oal/ünï cödé~@+", "-tmp-hh-z01s8oal--n--c-d----"),
        ("/agents/alice", "-agents-alice"),
        ("/x/\U0001f41d", "-x---"),  # an astral character is two UTF-16 units
    ],
)
def test_project_dir_name(cwd: str, name: str) -> None:
    assert project_dir_name(cwd) == name


def test_project_dir_name_of_a_long_path() -> None:
    # Observed: 258 characters → first 200 sanitized + "-" + base-36 djb2 of the path.
    cwd = "/tmp/hh.z01s8oal/" + "x" * 120 + "/" + "y_z." * 30
    name = project_dir_name(cwd)
    assert name.endswith("-ceosxf")
    assert name[:200] == project_dir_name(cwd[:200])[:200]
    assert len(name) == 207


def test_session_exists(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cwd = tmp_path / "work.dir"
    cwd.mkdir()
    path = session_file(home, cwd, SID)
    assert path == home / ".claude" / "projects" / project_dir_name(cwd.resolve()) / f"{SID}.jsonl"
    assert not session_exists(home, cwd, SID)
    path.parent.mkdir(parents=True)
    path.write_text("")
    assert session_exists(home, cwd, SID)
    assert not session_exists(home, cwd, "8c1f0f5e-2b44-4d2a-a0b5-3f3a3e9c9a00")
    # Another cwd, another project directory.
    other = tmp_path / "other"
    other.mkdir()
    assert not session_exists(home, other, SID)


def test_session_exists_resolves_symlinks(tmp_path: Path) -> None:
    # claude files sessions under its physical cwd (observed: $PWD and symlinks do not count).
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert session_file(tmp_path, link, SID) == session_file(tmp_path, real, SID)


def test_session_exists_long_path_by_prefix(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cwd = tmp_path / ("d" * 230)
    cwd.mkdir()
    exact = session_file(home, cwd, SID)
    assert len(exact.parent.name) > 200
    # A directory with the same 200-character prefix but another hash (another runtime's).
    other = exact.parent.with_name(exact.parent.name[:200] + "-otherhash")
    other.mkdir(parents=True)
    (other / f"{SID}.jsonl").write_text("{}\n")
    assert session_exists(home, cwd, SID)


def test_session_file_rejects_non_uuid(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        session_file(tmp_path, tmp_path, "../../etc/passwd")


def test_session_exists_without_home(tmp_path: Path) -> None:
    assert not session_exists(tmp_path / "nope", Path(os.sep), SID)
