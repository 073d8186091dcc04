"""An agent's own Claude Code config: its CLAUDE.md and settings.json, as its turns use them.

Both live in the agent's config repo next to agent.nix (hyperhive.config_repo). What a turn runs
with is the **applied** revision: hive-c0re copies those two files into the agent's config dir
(`<state>/agents/<name>/config`, read-only at /hive/config inside its container) before every
claude run, and claude gets them as

- `--append-system-prompt-file <config>/CLAUDE.md`: the agent's role and instructions, appended
  to Claude Code's own system prompt;
- `--settings <config>/settings.json` with `--setting-sources ""`: these settings and no others
  (not the agent's writable ~/.claude or /work/.claude, so an agent cannot widen its own
  permissions);
- `--model` and `--permission-mode` from what `effective_config` makes of the settings and the
  host's defaults, so the model and mode in force are known to hive-c0re and shown to operators.

Parsing is pure; `write_turn_config` is the I/O at the edge (config_repo reads the files).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hyperhive.errors import HiveError

INSTRUCTIONS_FILE = "CLAUDE.md"
SETTINGS_FILE = "settings.json"
PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "plan")
# In a sandbox (bwrap, nixos) the sandbox is the boundary: the normal coding tools run without
# prompts. Without one (process) only file edits inside the work dir do; Bash is refused.
SANDBOXED_DEFAULT_MODE = "bypassPermissions"
UNSANDBOXED_DEFAULT_MODE = "acceptEdits"
MAX_MODEL_CHARS = 200


class ClaudeSettingsError(HiveError):
    """A settings.json that Claude Code would misread, or hive could not honour."""


class ClaudeSettings(BaseModel):
    """What hive reads of an agent's settings.json (the file itself goes to claude whole)."""

    model: str = ""
    # "" = not set: the host's default (HIVE_PERMISSION_MODE, else the backend's).
    permission_mode: str = ""
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


class ClaudeDefaults(BaseModel):
    """The host's defaults for agents whose settings.json leaves something unset."""

    model: str = ""
    permission_mode: str = ""
    sandboxed: bool = True

    @property
    def mode(self) -> str:
        if self.permission_mode:
            return self.permission_mode
        return SANDBOXED_DEFAULT_MODE if self.sandboxed else UNSANDBOXED_DEFAULT_MODE


class ClaudeConfig(BaseModel):
    """What an agent's next turn runs with; `model` "" = the CLI's default model."""

    model: str = ""
    permission_mode: str = SANDBOXED_DEFAULT_MODE
    # Where each came from, for operators: settings.json, HIVE_MODEL, HIVE_PERMISSION_MODE, or
    # "default".
    model_from: str = "default"
    permission_mode_from: str = "default"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ClaudeSettingsError(
            f'settings.json: {where} must be a list of rule strings such as "Bash(git:*)"',
            'see "permissions" in Claude Code\'s settings documentation',
        )
    return tuple(value)


def parse_claude_settings(data: bytes | str | None) -> ClaudeSettings:
    """Parse an agent's settings.json (None or empty: no settings). Raises ClaudeSettingsError
    saying what is wrong; unknown keys are left to claude."""
    if data is None:
        return ClaudeSettings()
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if not text.strip():
        return ClaudeSettings()
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ClaudeSettingsError(
            f"settings.json is not valid JSON: {exc}", "fix the JSON (no comments, no trailing ,)"
        ) from None
    if not isinstance(raw, dict):
        raise ClaudeSettingsError(
            "settings.json must be a JSON object", 'start from {"permissions": {"deny": []}}'
        )
    model = raw.get("model", "")
    if not isinstance(model, str) or len(model) > MAX_MODEL_CHARS or "\n" in model:
        raise ClaudeSettingsError(
            'settings.json: model must be a model name, e.g. "sonnet" or "claude-opus-4-5"',
            "use a name or alias the claude CLI knows",
        )
    permissions = raw.get("permissions", {})
    if not isinstance(permissions, dict):
        raise ClaudeSettingsError(
            "settings.json: permissions must be an object",
            'e.g. {"permissions": {"defaultMode": "default", "allow": ["Read"]}}',
        )
    mode = permissions.get("defaultMode", "")
    if mode != "" and mode not in PERMISSION_MODES:
        raise ClaudeSettingsError(
            f"settings.json: permissions.defaultMode {mode!r} is not one of "
            f"{', '.join(PERMISSION_MODES)}",
            "pick one of those, or leave it out for the host's default",
        )
    return ClaudeSettings(
        model=model.strip(),
        permission_mode=mode,
        allow=_strings(permissions.get("allow"), "permissions.allow"),
        deny=_strings(permissions.get("deny"), "permissions.deny"),
    )


def effective_config(settings: ClaudeSettings, defaults: ClaudeDefaults) -> ClaudeConfig:
    """The agent's settings over the host's defaults."""
    if settings.model:
        model, model_from = settings.model, SETTINGS_FILE
    elif defaults.model:
        model, model_from = defaults.model, "HIVE_MODEL"
    else:
        model, model_from = "", "default"
    if settings.permission_mode:
        mode, mode_from = settings.permission_mode, SETTINGS_FILE
    elif defaults.permission_mode:
        mode, mode_from = defaults.permission_mode, "HIVE_PERMISSION_MODE"
    else:
        mode, mode_from = defaults.mode, "default"
    return ClaudeConfig(
        model=model,
        permission_mode=mode,
        model_from=model_from,
        permission_mode_from=mode_from,
        allow=settings.allow,
        deny=settings.deny,
    )


# -- I/O ---------------------------------------------------------------------------------------


class AppliedClaudeFiles(BaseModel):
    """The Claude Code files of an agent's applied config (settings None: the repo has none)."""

    instructions: bytes = b""
    settings: bytes | None = None
    # agent.nix: a warm claude started before it changed (mounts, say) is not used after.
    agent_nix: bytes = b""


def write_turn_config(config_dir: Path, files: Mapping[str, bytes]) -> None:
    """Write the files a turn's claude reads (mode 0644 in a 0755 dir: the sandbox only reads
    them), replacing each atomically and only when its content changed."""
    config_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config_dir, 0o755)  # noqa: S103 - the agent's sandbox reads it, as another uid
    for name, data in files.items():
        target = config_dir / name
        try:
            if not target.is_symlink() and target.read_bytes() == data:
                continue
        except OSError:
            pass
        tmp = config_dir / f".{name}.hive-tmp"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
