"""An agent's claude credentials, pasted by the operator on the agent's page.

They live in the agent's `HOME/.claude` (mode 0700, files 0600), which only that agent's
sandbox mounts:
- a `.credentials.json` as `claude auth login` writes it, used by claude as it is;
- an OAuth token from `claude setup-token` or an API key, kept in `hive-auth.json` and handed
  to each turn as `CLAUDE_CODE_OAUTH_TOKEN` / `ANTHROPIC_API_KEY` (REFERENCE §1: the key wins
  over the token, the token over the file).
"""

from __future__ import annotations

import json
import os
import tempfile
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel

from hyperhive.errors import HiveError

AUTH_FILE = "hive-auth.json"
CREDENTIALS_FILE = ".credentials.json"
MAX_SECRET_BYTES = 16384


class CredentialKind(StrEnum):
    OAUTH_TOKEN = "oauth_token"  # noqa: S105 - a kind, not a secret
    API_KEY = "api_key"
    CREDENTIALS_JSON = "credentials_json"


class CredentialError(HiveError):
    """Pasted credentials that cannot be right; nothing was stored."""


class CredentialSummary(BaseModel):
    """What is stored, never the secret itself."""

    kind: CredentialKind | None
    hint: str = ""


_ENV_OF = {
    CredentialKind.OAUTH_TOKEN: "CLAUDE_CODE_OAUTH_TOKEN",
    CredentialKind.API_KEY: "ANTHROPIC_API_KEY",
}


def _check(kind: CredentialKind, secret: str) -> str:
    secret = secret.strip()
    if not secret:
        raise CredentialError("the pasted credential is empty", "paste it again")
    if len(secret.encode()) > MAX_SECRET_BYTES:
        raise CredentialError(
            f"the pasted credential is over {MAX_SECRET_BYTES} bytes", "paste only the token"
        )
    if kind == CredentialKind.CREDENTIALS_JSON:
        try:
            data = json.loads(secret)
        except json.JSONDecodeError as e:
            raise CredentialError(
                f"the pasted .credentials.json is not JSON ({e.msg} at line {e.lineno})",
                "paste the whole file ~/.claude/.credentials.json",
            ) from None
        oauth = data.get("claudeAiOauth") if isinstance(data, dict) else None
        if not isinstance(oauth, dict) or not isinstance(oauth.get("accessToken"), str):
            raise CredentialError(
                "the pasted JSON has no claudeAiOauth.accessToken",
                "paste the file `claude auth login` wrote (~/.claude/.credentials.json)",
            )
        return secret
    if any(c.isspace() for c in secret) or not secret.isascii():
        raise CredentialError(
            "the pasted token contains spaces or non-ASCII characters", "paste the token alone"
        )
    if kind == CredentialKind.OAUTH_TOKEN and not secret.startswith("sk-ant-oat"):
        raise CredentialError(
            "that is not an OAuth token (they start with sk-ant-oat)",
            "run `claude setup-token` and paste what it prints, or choose API key",
        )
    if kind == CredentialKind.API_KEY and not secret.startswith("sk-ant-"):
        raise CredentialError(
            "that is not an Anthropic API key (they start with sk-ant-)",
            "copy the key from console.anthropic.com",
        )
    return secret


def _write_private(path: Path, text: str) -> None:
    """Write 0600 and rename into place: a reader sees the old file or the new, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_credentials(claude_dir: Path, kind: CredentialKind, secret: str) -> CredentialSummary:
    """Check and store `secret`; it replaces whatever the agent had."""
    secret = _check(kind, secret)
    claude_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(claude_dir, 0o700)
    if kind == CredentialKind.CREDENTIALS_JSON:
        _write_private(claude_dir / CREDENTIALS_FILE, secret)
        (claude_dir / AUTH_FILE).unlink(missing_ok=True)
    else:
        _write_private(claude_dir / AUTH_FILE, json.dumps({"kind": kind.value, "secret": secret}))
    return stored_credentials(claude_dir)


def _auth_file(claude_dir: Path) -> tuple[CredentialKind, str] | None:
    try:
        data = json.loads((claude_dir / AUTH_FILE).read_text())
        return CredentialKind(data["kind"]), str(data["secret"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stored_credentials(claude_dir: Path) -> CredentialSummary:
    auth = _auth_file(claude_dir)
    if auth is not None:
        kind, secret = auth
        return CredentialSummary(kind=kind, hint=f"{secret[:10]}…{secret[-4:]}")
    if (claude_dir / CREDENTIALS_FILE).is_file():
        return CredentialSummary(kind=CredentialKind.CREDENTIALS_JSON, hint=CREDENTIALS_FILE)
    return CredentialSummary(kind=None)


def credential_env(claude_dir: Path) -> dict[str, str]:
    """Environment for the agent's turns: the stored token or key, if there is one."""
    auth = _auth_file(claude_dir)
    if auth is None:
        return {}
    kind, secret = auth
    env = _ENV_OF.get(kind)
    return {env: secret} if env else {}
