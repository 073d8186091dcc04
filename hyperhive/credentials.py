"""An agent's claude credentials: its own login, pasted by the operator on the agent's page or
given with `hive login NAME`, and the host-wide ones (HIVE_API_KEY, HIVE_OAUTH_TOKEN).

An agent's own login lives in its `HOME/.claude` (mode 0700, files 0600), which only that
agent's sandbox mounts:
- a `.credentials.json` as `claude auth login` writes it, used by claude as it is;
- an OAuth token from `claude setup-token` or an API key, kept in `hive-auth.json` and handed
  to each turn as `CLAUDE_CODE_OAUTH_TOKEN` / `ANTHROPIC_API_KEY` (REFERENCE §1: the key wins
  over the token, the token over the file).

`turn_credentials` decides what one turn gets (see there for the rules).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from hyperhive.errors import HiveError

if TYPE_CHECKING:
    from pydantic import SecretStr

    from hyperhive.settings import HiveSettings

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


API_KEY_ENV = "ANTHROPIC_API_KEY"
OAUTH_TOKEN_ENV = "CLAUDE_CODE_OAUTH_TOKEN"  # noqa: S105 - a variable name
# A bearer token (for gateways); claude ranks it above ANTHROPIC_API_KEY.
AUTH_TOKEN_ENV = "ANTHROPIC_AUTH_TOKEN"  # noqa: S105 - a variable name
#: Every environment variable claude takes a credential from. Whichever of them a turn gets
#: beats `$HOME/.claude/.credentials.json`, and they beat one another (REFERENCE §1).
CREDENTIAL_ENV: frozenset[str] = frozenset({API_KEY_ENV, OAUTH_TOKEN_ENV, AUTH_TOKEN_ENV})

_ENV_OF = {
    CredentialKind.OAUTH_TOKEN: OAUTH_TOKEN_ENV,
    CredentialKind.API_KEY: API_KEY_ENV,
}
# A hint shows at most this much of a secret: its prefix (the kind) and its last 4 characters,
# and only the prefix of a secret too short for that to hide most of it.
_HINT_HEAD, _HINT_TAIL, _HINT_MIN_LEN = 10, 4, 24


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
        data = json.loads(_read_agent_file(claude_dir / AUTH_FILE))
        return CredentialKind(data["kind"]), str(data["secret"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_agent_file(path: Path) -> bytes:
    """A small regular file in a dir the agent can write: never through a symlink it planted,
    never blocking on a FIFO, never more than a credential's size."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.read(fd, MAX_SECRET_BYTES * 2)
    finally:
        os.close(fd)


def masked(secret: str) -> str:
    """What may be shown of a token or key: e.g. `sk-ant-oat…WXYZ`, never most of it."""
    if len(secret) < _HINT_MIN_LEN:
        return f"{secret[:7]}…"  # "sk-ant-…": the kind, nothing of the secret part
    return f"{secret[:_HINT_HEAD]}…{secret[-_HINT_TAIL:]}"


def stored_credentials(claude_dir: Path) -> CredentialSummary:
    auth = _auth_file(claude_dir)
    if auth is not None:
        kind, secret = auth
        return CredentialSummary(kind=kind, hint=masked(secret))
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


CredentialSource = Literal["agent", "HIVE_API_KEY", "HIVE_OAUTH_TOKEN", "HIVE_AGENT_EXTRA_ENV"]


@dataclass(frozen=True, slots=True, repr=False)
class TurnCredentials:
    """The credential part of one turn's environment.

    `env`: set these. `drop`: remove these from what HIVE_AGENT_EXTRA_ENV (or anything else)
    would put in the environment, before `env` is added. `source`: where the credential comes
    from, for logs and `needs_login` messages (None: no credential at all).
    """

    env: dict[str, str] = field(default_factory=dict)
    drop: frozenset[str] = frozenset()
    source: CredentialSource | None = None

    def __repr__(self) -> str:  # never the secrets, should one of these be logged
        return (
            f"TurnCredentials(env={sorted(self.env)}, drop={sorted(self.drop)}, "
            f"source={self.source!r})"
        )


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value().strip() if value is not None else ""


def _only(env: dict[str, str], source: CredentialSource) -> TurnCredentials:
    """`env` as the turn's one credential: every other credential variable is dropped."""
    return TurnCredentials(env=env, drop=CREDENTIAL_ENV - env.keys(), source=source)


def turn_credentials(claude_dir: Path, settings: HiveSettings) -> TurnCredentials:
    """The credentials one turn of an agent runs with, first match wins:

    1. the agent's own login (pasted on its page or given with `hive login`): the token or key
       in `claude_dir/hive-auth.json`, else `claude_dir/.credentials.json` (claude reads that
       file itself). Every other credential variable is dropped, HIVE_AGENT_EXTRA_ENV's
       included: under `-p` an ANTHROPIC_API_KEY beats CLAUDE_CODE_OAUTH_TOKEN, which beats the
       file (REFERENCE §1), so any of them left in would beat the agent's own login;
    2. HIVE_API_KEY (`settings.api_key`) as ANTHROPIC_API_KEY;
    3. HIVE_OAUTH_TOKEN (`settings.oauth_token`) as CLAUDE_CODE_OAUTH_TOKEN;
    4. whatever credential HIVE_AGENT_EXTRA_ENV carries (`env` and `drop` empty: kept as is);
    5. nothing (`source` None): the turn ends in claude's "Not logged in".

    In 2 and 3 the other credential variables in HIVE_AGENT_EXTRA_ENV are dropped too.
    ANTHROPIC_BASE_URL is not a credential and is never touched here. Pure apart from reading
    the two files; a damaged `hive-auth.json` counts as no login. The call site, for a turn:

        creds = turn_credentials(host_home / ".claude", settings)
        extra = {k: v for k, v in settings.agent_extra_env.items() if k not in creds.drop}
        env = claude_env(base, home=view.home, extra={**extra, **creds.env})
    """
    auth = _auth_file(claude_dir)
    if auth is not None and auth[0] in _ENV_OF and auth[1]:
        kind, secret = auth
        return _only({_ENV_OF[kind]: secret}, "agent")
    if (claude_dir / CREDENTIALS_FILE).is_file():
        return _only({}, "agent")
    if api_key := _secret(settings.api_key):
        return _only({API_KEY_ENV: api_key}, "HIVE_API_KEY")
    if oauth_token := _secret(settings.oauth_token):
        return _only({OAUTH_TOKEN_ENV: oauth_token}, "HIVE_OAUTH_TOKEN")
    if CREDENTIAL_ENV & settings.agent_extra_env.keys():
        return TurnCredentials(source="HIVE_AGENT_EXTRA_ENV")
    return TurnCredentials()
