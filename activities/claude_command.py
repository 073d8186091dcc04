"""Pure builders for one ``claude -p`` turn: argv, MCP config, environment, session file check.

Checked against claude 2.1.197 (see REFERENCE §1 and tests/integration/test_session_files.py).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PERMISSION_MODES = frozenset(
    {"acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "plan"}
)
HIVE_SERVER = "hive"
MCP_CONNECT_TIMEOUT_MS = 60_000

# claude's sanitizePath(): names longer than this are cut and get a hash suffix.
_MAX_PROJECT_DIR_CHARS = 200


def claude_argv(
    claude_bin: str | os.PathLike[str],
    *,
    session_id: str,
    resume: bool,
    mcp_config: Mapping[str, Any],
    model: str = "",
    permission_mode: str = "default",
    allowed_tools: Sequence[str] = ("mcp__hive",),
    max_turns: int | None = None,
    append_system_prompt: str | None = None,
    append_system_prompt_file: str | None = None,
    settings_file: str | None = None,
    add_dirs: Sequence[str] = (),
    stream_input: bool = False,
) -> list[str]:
    """The argv of one turn. The prompt is not in it: write it to the process's stdin.

    ``stream_input``: ``--input-format stream-json``: stdin carries one JSON user message per
    line, each a turn ending with a ``result`` event, and claude lives on until stdin closes
    (a warm agent). ``total_cost_usd`` in each result is then the process's running total.

    ``--mcp-config``, ``--allowedTools`` and ``--add-dir`` are variadic: a positional prompt after
    them would be taken as one more value, so the prompt always goes on stdin (``-p`` reads it).

    ``resume``: ``--resume <id>`` (continue that session, same id) instead of ``--session-id <id>``
    (create it; refused if it exists). Decide with ``session_exists``, not a turn counter.

    ``append_system_prompt_file``: the agent's CLAUDE.md, appended to Claude Code's system prompt.
    ``settings_file``: the agent's settings.json, and no other settings: ``--setting-sources ""``
    keeps claude from also loading the user, project and local settings files, which the agent
    could write itself (checked on 2.1.197: a model set there is then ignored).
    """
    _check_uuid(session_id)
    if permission_mode not in PERMISSION_MODES:
        raise ValueError(
            f"permission mode {permission_mode!r} is not one of {sorted(PERMISSION_MODES)}"
        )
    if max_turns is not None and max_turns < 1:
        raise ValueError(f"max_turns must be at least 1, not {max_turns}")
    argv = [
        str(claude_bin),
        "-p",
        # stream-json under -p needs --verbose, else the CLI exits 1.
        "--output-format",
        "stream-json",
        "--verbose",
    ]
    if stream_input:
        argv += ["--input-format", "stream-json"]
    argv += [
        "--resume" if resume else "--session-id",
        session_id,
        "--permission-mode",
        permission_mode,
    ]
    if model:
        argv += ["--model", model]
    if max_turns is not None:
        argv += ["--max-turns", str(max_turns)]
    if append_system_prompt:
        argv += ["--append-system-prompt", append_system_prompt]
    if append_system_prompt_file:
        argv += ["--append-system-prompt-file", append_system_prompt_file]
    if settings_file:
        argv += ["--settings", settings_file, "--setting-sources", ""]
    # Variadic flags last, each followed only by flags.
    if add_dirs:
        argv += ["--add-dir", *add_dirs]
    argv += [
        "--mcp-config",
        json.dumps(mcp_config, separators=(",", ":"), ensure_ascii=False),
        "--strict-mcp-config",
    ]
    if allowed_tools:
        argv += ["--allowedTools", *allowed_tools]
    return argv


def hive_mcp_config(
    command: str = "hive-agent",
    args: Sequence[str] = ("mcp",),
    *,
    env: Mapping[str, str],
) -> dict[str, Any]:
    """An ``--mcp-config`` document with our stdio server named ``hive`` (tools ``mcp__hive__*``).

    The CLI expands ``${VAR}`` in the config, env values included: do not pass untrusted text.
    """
    return {
        "mcpServers": {
            HIVE_SERVER: {
                "type": "stdio",
                "command": command,
                "args": list(args),
                "env": dict(env),
            }
        }
    }


def claude_env(
    base: Mapping[str, str],
    *,
    home: str,
    extra: Mapping[str, str] | None = None,
    sandboxed: bool = True,
) -> dict[str, str]:
    """The environment of one turn: ``base`` without what a parent claude leaves, plus our knobs.

    - ``CLAUDECODE`` and every other ``CLAUDE*`` variable are dropped (a parent Claude Code sets
      several; ``CLAUDE_CONFIG_DIR`` would move the session files away from ``$HOME/.claude``).
      Pass wanted ones, e.g. ``CLAUDE_CODE_OAUTH_TOKEN``, in ``extra``.
    - ``CLAUDE_CODE_MAX_RETRIES=0``: an API error ends the turn in ~1 s instead of minutes of the
      CLI's own retries; the workflow owns retries and waits durably.
    - ``DISABLE_AUTOUPDATER``, ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC``: no updater, no side
      requests such as session titles.
    - ``IS_SANDBOX=1`` when ``sandboxed``: root may use ``bypassPermissions`` (the container is
      the sandbox). Not without a sandbox: there claude itself refuses that mode to root.
    - ``MCP_CONNECTION_NONBLOCKING=0``: ``-p`` waits for the MCP servers before the first model
      request. By default it connects them in the background, and a bridge that starts a little
      slowly leaves the first turn of a new agent without the hive tools ("still connecting").
    - ``MCP_CONNECT_TIMEOUT_MS=60000``: how long that wait may be. The default, 5 s, is too short
      for the hive bridge (a Python start-up) on a busy machine: the turn then ran with the hive
      server "pending" and no send tool (23 of 248 turns in a 5-agent run; 0 of 739 with 60 s).

    ``extra`` is applied last and wins. ``ANTHROPIC_*`` in ``base`` is kept.
    """
    env = {k: v for k, v in base.items() if not k.startswith("CLAUDE")}
    env.update(
        HOME=home,
        CLAUDE_CODE_MAX_RETRIES="0",
        DISABLE_AUTOUPDATER="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        MCP_CONNECTION_NONBLOCKING="0",
        MCP_CONNECT_TIMEOUT_MS=str(MCP_CONNECT_TIMEOUT_MS),
    )
    if sandboxed:
        env["IS_SANDBOX"] = "1"
    env.update(extra or {})
    return env


def git_identity_env(agent: str) -> dict[str, str]:
    """Commits an agent makes carry its name (no global git config in a sandbox)."""
    email = f"{agent}@hyperhive.invalid"
    return {
        "GIT_AUTHOR_NAME": agent,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": agent,
        "GIT_COMMITTER_EMAIL": email,
    }


def project_dir_name(cwd: str | os.PathLike[str]) -> str:
    """The directory under ``$HOME/.claude/projects`` where claude files sessions of ``cwd``.

    claude 2.1.197 replaces every UTF-16 code unit that is not ``[a-zA-Z0-9]`` by ``-`` (so ``/``,
    ``.``, ``_``, spaces and each non-ASCII letter; astral characters give two), and for names
    over 200 characters keeps the first 200 plus ``-`` and a base-36 djb2 hash of the path.
    ``cwd`` must be the physical path (see ``session_file``).
    """
    path = os.fspath(cwd)
    units = _utf16_units(path)
    sanitized = "".join(chr(u) if u < 128 and chr(u).isalnum() else "-" for u in units)
    if len(sanitized) <= _MAX_PROJECT_DIR_CHARS:
        return sanitized
    return f"{sanitized[:_MAX_PROJECT_DIR_CHARS]}-{_base36(abs(_djb2(units)))}"


def session_file(home: Path, cwd: Path, session_id: str) -> Path:
    """Where claude writes the transcript of ``session_id`` run in ``cwd`` with this ``HOME``.

    The CLI uses its physical working directory (symlinks resolved, ``$PWD`` ignored), so ``cwd``
    is resolved here too.
    """
    _check_uuid(session_id)
    real_cwd = os.path.realpath(cwd)
    return home / ".claude" / "projects" / project_dir_name(real_cwd) / f"{session_id}.jsonl"


def session_exists(home: Path, cwd: Path, session_id: str) -> bool:
    """Whether a turn in ``cwd`` must ``--resume`` ``session_id`` (else ``--session-id``).

    The file appears as soon as a turn starts (a turn killed mid-request, or failing with an API
    error or "Not logged in", leaves it), and ``--resume`` only finds sessions of the same cwd.
    Any file counts, even an empty one: ``--session-id`` refuses an id whose file exists at all,
    while ``--resume`` skips empty files and then reports the session missing, which the caller
    handles by starting a fresh session.
    """
    path = session_file(home, cwd, session_id)
    if path.is_file():
        return True
    name = path.parent.name
    if len(name) <= _MAX_PROJECT_DIR_CHARS:
        return False
    # Long paths: ``--resume`` also accepts any directory with the same 200-character prefix (its
    # lookup does, to survive hash changes), so do the same.
    prefix = name[:_MAX_PROJECT_DIR_CHARS] + "-"
    projects = path.parent.parent
    try:
        candidates = [d for d in projects.iterdir() if d.name.startswith(prefix)]
    except OSError:
        return False
    return any((d / path.name).is_file() for d in candidates)


def _check_uuid(session_id: str) -> None:
    try:
        uuid.UUID(session_id)
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"session id {session_id!r} is not a UUID (claude requires one)") from None


def _utf16_units(text: str) -> list[int]:
    data = text.encode("utf-16-le", "surrogatepass")
    return [int.from_bytes(data[i : i + 2], "little") for i in range(0, len(data), 2)]


def _djb2(units: Sequence[int]) -> int:
    """JavaScript's ``h = (h << 5) - h + code | 0`` over UTF-16 code units, as a signed int32."""
    h = 0
    for unit in units:
        h = (h * 31 + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
