"""Credentials pasted on an agent's page (hyperhive/credentials.py): checked, stored 0600 in the
agent's ~/.claude, summarised without the secret, and handed to its turns."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from hyperhive.credentials import (
    AUTH_FILE,
    CREDENTIALS_FILE,
    CredentialError,
    CredentialKind,
    credential_env,
    save_credentials,
    stored_credentials,
)

TOKEN = "sk-ant-oat01-" + "a" * 80 + "WXYZ"
API_KEY = "sk-ant-api03-" + "b" * 80 + "KEY9"
CREDS = json.dumps(
    {"claudeAiOauth": {"accessToken": "sk-ant-oat01-x", "refreshToken": "r", "expiresAt": 1}}
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def claude_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".claude"


def test_nothing_stored_means_no_kind_and_no_environment(claude_dir):
    assert stored_credentials(claude_dir).kind is None
    assert credential_env(claude_dir) == {}


def test_an_oauth_token_is_stored_privately_and_reaches_the_turns(claude_dir):
    summary = save_credentials(claude_dir, CredentialKind.OAUTH_TOKEN, f"  {TOKEN}\n")
    assert summary.kind == CredentialKind.OAUTH_TOKEN
    assert TOKEN not in summary.hint and summary.hint.endswith("WXYZ")
    assert mode(claude_dir) == 0o700 and mode(claude_dir / AUTH_FILE) == 0o600
    assert json.loads((claude_dir / AUTH_FILE).read_text()) == {
        "kind": "oauth_token",
        "secret": TOKEN,  # pasted with stray whitespace, stored without
    }
    assert credential_env(claude_dir) == {"CLAUDE_CODE_OAUTH_TOKEN": TOKEN}


def test_an_api_key_replaces_the_token(claude_dir):
    save_credentials(claude_dir, CredentialKind.OAUTH_TOKEN, TOKEN)
    save_credentials(claude_dir, CredentialKind.API_KEY, API_KEY)
    assert stored_credentials(claude_dir).kind == CredentialKind.API_KEY
    assert credential_env(claude_dir) == {"ANTHROPIC_API_KEY": API_KEY}
    # No half-written temporary files are left beside it.
    assert sorted(p.name for p in claude_dir.iterdir()) == [AUTH_FILE]


def test_a_credentials_file_is_written_as_claude_reads_it_and_wins_over_a_stored_token(
    claude_dir,
):
    save_credentials(claude_dir, CredentialKind.OAUTH_TOKEN, TOKEN)
    summary = save_credentials(claude_dir, CredentialKind.CREDENTIALS_JSON, CREDS)
    assert summary.kind == CredentialKind.CREDENTIALS_JSON and "sk-ant" not in summary.hint
    assert (claude_dir / CREDENTIALS_FILE).read_text() == CREDS
    assert mode(claude_dir / CREDENTIALS_FILE) == 0o600
    # The old token is gone: it would beat the file in claude's precedence.
    assert not (claude_dir / AUTH_FILE).exists()
    assert credential_env(claude_dir) == {}


def test_a_directory_left_too_open_is_closed(claude_dir):
    claude_dir.mkdir(parents=True, mode=0o755)
    claude_dir.chmod(0o755)
    save_credentials(claude_dir, CredentialKind.API_KEY, API_KEY)
    assert mode(claude_dir) == 0o700


@pytest.mark.parametrize(
    ("kind", "secret", "says"),
    [
        (CredentialKind.OAUTH_TOKEN, "   ", "empty"),
        (CredentialKind.OAUTH_TOKEN, API_KEY, "not an OAuth token"),
        (CredentialKind.API_KEY, "hello", "not an Anthropic API key"),
        (CredentialKind.API_KEY, "sk-ant-api03 two words", "spaces"),
        (CredentialKind.OAUTH_TOKEN, "sk-ant-oat01-é", "non-ASCII"),
        (CredentialKind.CREDENTIALS_JSON, "{not json", "not JSON"),
        (CredentialKind.CREDENTIALS_JSON, '{"claudeAiOauth": {}}', "accessToken"),
        (CredentialKind.API_KEY, "sk-ant-" + "x" * 20000, "bytes"),
    ],
)
def test_bad_credentials_are_refused_with_a_hint_and_nothing_is_written(
    claude_dir, kind, secret, says
):
    save_credentials(claude_dir, CredentialKind.OAUTH_TOKEN, TOKEN)
    with pytest.raises(CredentialError) as excinfo:
        save_credentials(claude_dir, kind, secret)
    assert says in excinfo.value.what and excinfo.value.hint
    assert secret.strip() not in str(excinfo.value) or not secret.strip()
    # What was there before is untouched.
    assert credential_env(claude_dir) == {"CLAUDE_CODE_OAUTH_TOKEN": TOKEN}
    assert sorted(p.name for p in claude_dir.iterdir()) == [AUTH_FILE]


def test_a_damaged_auth_file_counts_as_nothing_stored(claude_dir):
    claude_dir.mkdir(parents=True)
    (claude_dir / AUTH_FILE).write_text("{garbage")
    assert stored_credentials(claude_dir).kind is None
    assert credential_env(claude_dir) == {}
