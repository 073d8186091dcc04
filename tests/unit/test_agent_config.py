"""An agent's Claude Code config (hyperhive.agent_config): its settings.json as hive reads it, the
host's defaults under it, and the files a turn's claude reads."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hyperhive.agent_config import (
    ClaudeDefaults,
    ClaudeSettings,
    ClaudeSettingsError,
    effective_config,
    parse_claude_settings,
    write_turn_config,
)


def test_no_settings_and_empty_settings_mean_nothing_set() -> None:
    assert parse_claude_settings(None) == ClaudeSettings()
    assert parse_claude_settings(b"  \n") == ClaudeSettings()
    assert parse_claude_settings("{}") == ClaudeSettings()


def test_the_fields_hive_shows_are_read_and_the_rest_left_to_claude() -> None:
    parsed = parse_claude_settings(
        b'{"model": " sonnet ", "env": {"X": "1"}, "permissions": '
        b'{"defaultMode": "default", "allow": ["Read"], "deny": ["Bash(rm:*)"]}}'
    )
    assert parsed == ClaudeSettings(
        model="sonnet", permission_mode="default", allow=("Read",), deny=("Bash(rm:*)",)
    )


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '"a string"',
        '{"model": ["x"]}',
        '{"model": "a\\nb"}',
        '{"permissions": []}',
        '{"permissions": {"defaultMode": "yolo"}}',
        '{"permissions": {"allow": [""]}}',
        '{"permissions": {"deny": [1]}}',
    ],
)
def test_settings_claude_would_misread_are_refused(text: str) -> None:
    with pytest.raises(ClaudeSettingsError) as info:
        parse_claude_settings(text)
    assert info.value.what.startswith("settings.json") and info.value.hint


def test_in_a_sandbox_the_default_is_no_prompts_and_without_one_edits_only() -> None:
    nothing = ClaudeSettings()
    sandboxed = effective_config(nothing, ClaudeDefaults(sandboxed=True))
    assert (sandboxed.model, sandboxed.permission_mode) == ("", "bypassPermissions")
    assert sandboxed.model_from == sandboxed.permission_mode_from == "default"
    bare = effective_config(nothing, ClaudeDefaults(sandboxed=False))
    assert bare.permission_mode == "acceptEdits"


def test_the_agents_settings_win_over_the_hosts_which_win_over_the_backends() -> None:
    host = ClaudeDefaults(model="haiku", permission_mode="default", sandboxed=True)
    assert effective_config(ClaudeSettings(), host).model_dump(
        include={"model", "model_from", "permission_mode", "permission_mode_from"}
    ) == {
        "model": "haiku",
        "model_from": "HIVE_MODEL",
        "permission_mode": "default",
        "permission_mode_from": "HIVE_PERMISSION_MODE",
    }
    own = effective_config(ClaudeSettings(model="opus", permission_mode="plan"), host)
    assert (own.model, own.model_from) == ("opus", "settings.json")
    assert (own.permission_mode, own.permission_mode_from) == ("plan", "settings.json")


def test_turn_config_files_are_replaced_whole_and_readable_by_the_sandbox(tmp_path: Path) -> None:
    config = tmp_path / "config"
    write_turn_config(config, {"CLAUDE.md": b"one", "settings.json": b"{}"})
    before = (config / "CLAUDE.md").stat().st_ino
    write_turn_config(config, {"CLAUDE.md": b"one", "settings.json": b"{}"})
    assert (config / "CLAUDE.md").stat().st_ino == before, "unchanged content is not rewritten"
    (config / "settings.json").unlink()
    (config / "settings.json").symlink_to("/etc/passwd")
    write_turn_config(config, {"CLAUDE.md": b"two", "settings.json": b'{"model": "x"}'})
    assert (config / "CLAUDE.md").read_bytes() == b"two"
    assert not (config / "settings.json").is_symlink()
    assert (config / "settings.json").read_bytes() == b'{"model": "x"}'
    assert stat.S_IMODE(config.stat().st_mode) == 0o755
    assert stat.S_IMODE((config / "CLAUDE.md").stat().st_mode) == 0o644
    assert sorted(p.name for p in config.iterdir()) == ["CLAUDE.md", "settings.json"]
