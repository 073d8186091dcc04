"""Credentials (hyperhive/credentials.py): an agent's own, pasted on its page or given with
`hive login`, checked, stored 0600 in its ~/.claude and summarised without the secret; which
credential a turn gets (turn_credentials); and that `hive login` / `hive settings` never show a
secret."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hive_c0re import cli
from hive_c0re.cli_login import InputRefused, pick_secret
from hyperhive.credentials import (
    AUTH_FILE,
    CREDENTIALS_FILE,
    CredentialError,
    CredentialKind,
    TurnCredentials,
    credential_env,
    masked,
    save_credentials,
    stored_credentials,
    turn_credentials,
)
from hyperhive.settings import HiveSettings

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


# -- what one turn gets: turn_credentials -------------------------------------------------------

HOST_KEY = "sk-ant-api03-" + "h" * 80 + "HOST"
HOST_TOKEN = "sk-ant-oat01-" + "t" * 80 + "HOST"
EXTRA = {
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:9999",
    "ANTHROPIC_API_KEY": "dummy",
    "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-extra",
    "ANTHROPIC_AUTH_TOKEN": "bearer-extra",
    "OTHER": "kept",
}
EVERY_CREDENTIAL = {"ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN"}


def host(**values: object) -> HiveSettings:
    return HiveSettings(**values)  # type: ignore[arg-type]


def turn_env(claude_dir: Path, settings: HiveSettings) -> dict[str, str]:
    """What the turn's environment gets, applied as turn_credentials' docstring says."""
    creds = turn_credentials(claude_dir, settings)
    extra = {k: v for k, v in settings.agent_extra_env.items() if k not in creds.drop}
    return {**extra, **creds.env}


def test_no_credential_anywhere_gives_nothing(claude_dir):
    creds = turn_credentials(claude_dir, host())
    assert creds == TurnCredentials() and creds.source is None
    assert not creds.env and not creds.drop


def test_extra_env_alone_is_kept_as_it_was(claude_dir):
    settings = host(agent_extra_env=EXTRA)
    creds = turn_credentials(claude_dir, settings)
    assert creds.source == "HIVE_AGENT_EXTRA_ENV" and not creds.env and not creds.drop
    assert turn_env(claude_dir, settings) == EXTRA


def test_extra_env_without_a_credential_is_no_source(claude_dir):
    settings = host(agent_extra_env={"ANTHROPIC_BASE_URL": "http://gw"})
    assert turn_credentials(claude_dir, settings).source is None
    assert turn_env(claude_dir, settings) == {"ANTHROPIC_BASE_URL": "http://gw"}


def test_host_api_key_beats_extra_env_and_base_url_is_left_alone(claude_dir):
    settings = host(api_key=HOST_KEY, agent_extra_env=EXTRA)
    creds = turn_credentials(claude_dir, settings)
    assert creds.source == "HIVE_API_KEY"
    assert creds.env == {"ANTHROPIC_API_KEY": HOST_KEY}
    assert creds.drop == EVERY_CREDENTIAL - {"ANTHROPIC_API_KEY"}
    assert turn_env(claude_dir, settings) == {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9999",
        "ANTHROPIC_API_KEY": HOST_KEY,
        "OTHER": "kept",
    }


def test_host_api_key_beats_host_oauth_token(claude_dir):
    creds = turn_credentials(claude_dir, host(api_key=HOST_KEY, oauth_token=HOST_TOKEN))
    assert creds.env == {"ANTHROPIC_API_KEY": HOST_KEY} and creds.source == "HIVE_API_KEY"


def test_host_oauth_token_drops_the_extra_api_key_that_would_beat_it(claude_dir):
    settings = host(oauth_token=f" {HOST_TOKEN}\n", agent_extra_env=EXTRA)
    creds = turn_credentials(claude_dir, settings)
    assert creds.source == "HIVE_OAUTH_TOKEN"
    assert creds.env == {"CLAUDE_CODE_OAUTH_TOKEN": HOST_TOKEN}  # stray whitespace trimmed
    assert {"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"} <= creds.drop
    env = turn_env(claude_dir, settings)
    assert env["CLAUDE_CODE_OAUTH_TOKEN"] == HOST_TOKEN
    assert "ANTHROPIC_API_KEY" not in env and "ANTHROPIC_AUTH_TOKEN" not in env
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9999"


def test_empty_host_values_count_as_unset(claude_dir):
    settings = host(api_key="  ", oauth_token="", agent_extra_env=EXTRA)
    assert turn_credentials(claude_dir, settings).source == "HIVE_AGENT_EXTRA_ENV"


@pytest.mark.parametrize(
    ("kind", "secret", "var"),
    [
        (CredentialKind.OAUTH_TOKEN, TOKEN, "CLAUDE_CODE_OAUTH_TOKEN"),
        (CredentialKind.API_KEY, API_KEY, "ANTHROPIC_API_KEY"),
    ],
)
def test_the_agents_own_token_or_key_beats_every_host_wide_credential(
    claude_dir, kind, secret, var
):
    save_credentials(claude_dir, kind, secret)
    settings = host(api_key=HOST_KEY, oauth_token=HOST_TOKEN, agent_extra_env=EXTRA)
    creds = turn_credentials(claude_dir, settings)
    assert creds.source == "agent" and creds.env == {var: secret}
    assert creds.drop == EVERY_CREDENTIAL - {var}
    env = turn_env(claude_dir, settings)
    # The agent's own login is the one credential left: nothing that would beat it.
    assert {k for k in env if k in EVERY_CREDENTIAL} == {var} and env[var] == secret
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9999" and env["OTHER"] == "kept"


def test_the_agents_credentials_file_drops_every_credential_variable(claude_dir):
    save_credentials(claude_dir, CredentialKind.CREDENTIALS_JSON, CREDS)
    settings = host(api_key=HOST_KEY, oauth_token=HOST_TOKEN, agent_extra_env=EXTRA)
    creds = turn_credentials(claude_dir, settings)
    assert creds.source == "agent" and creds.env == {} and creds.drop == EVERY_CREDENTIAL
    # claude reads the file itself; any variable would beat it.
    assert turn_env(claude_dir, settings) == {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9999",
        "OTHER": "kept",
    }


def test_a_credentials_file_claude_wrote_itself_counts_as_the_agents_login(claude_dir):
    claude_dir.mkdir(parents=True)
    (claude_dir / CREDENTIALS_FILE).write_text(CREDS)
    creds = turn_credentials(claude_dir, host(api_key=HOST_KEY))
    assert creds.source == "agent" and creds.drop == EVERY_CREDENTIAL


def test_a_damaged_auth_file_falls_through_to_the_host_wide_key(claude_dir):
    claude_dir.mkdir(parents=True)
    (claude_dir / AUTH_FILE).write_text("{garbage")
    creds = turn_credentials(claude_dir, host(api_key=HOST_KEY))
    assert creds.source == "HIVE_API_KEY" and creds.env == {"ANTHROPIC_API_KEY": HOST_KEY}


def test_turn_credentials_never_show_their_secrets(claude_dir):
    save_credentials(claude_dir, CredentialKind.OAUTH_TOKEN, TOKEN)
    creds = turn_credentials(claude_dir, host())
    assert TOKEN not in repr(creds) and TOKEN not in str(creds)
    assert "CLAUDE_CODE_OAUTH_TOKEN" in repr(creds)


def test_a_hint_never_shows_most_of_a_short_secret(claude_dir):
    short = "sk-ant-api03-abc"
    assert masked(short) == "sk-ant-…"
    assert masked(TOKEN) == "sk-ant-oat…WXYZ"
    save_credentials(claude_dir, CredentialKind.API_KEY, short)
    assert stored_credentials(claude_dir).hint == "sk-ant-…"


# -- `hive login`: what it takes from stdin -----------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kind", "expected"),
    [
        (TOKEN, None, ("oauth_token", TOKEN)),
        (API_KEY, None, ("api_key", API_KEY)),
        (CREDS, None, ("credentials_json", CREDS)),
        # What `claude setup-token` prints around the token.
        (f"\x1b[1mYour OAuth token:\x1b[0m\n\n{TOKEN}\n\nStore it.", None, ("oauth_token", TOKEN)),
        (f"token: `{TOKEN}`.", None, ("oauth_token", TOKEN)),
        # --kind is sent as given; hive-c0re checks that it fits.
        (API_KEY, "oauth_token", ("oauth_token", API_KEY)),
        ("hunter2", "api_key", ("api_key", "hunter2")),
        ("{broken", "credentials_json", ("credentials_json", "{broken")),
    ],
)
def test_hive_login_tells_the_kind_from_the_shape(given, kind, expected):
    assert pick_secret(given, kind) == expected


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("hunter2", "--kind"),
        ("ghp_" + "x" * 36, "--kind"),
        ("{hunter2", "not a JSON object"),
        ("[1, 2]", "--kind"),
        (f"{TOKEN} {API_KEY}", "2 different"),
    ],
)
def test_hive_login_refuses_what_it_cannot_recognise_without_echoing_it(given, says):
    with pytest.raises(InputRefused) as excinfo:
        pick_secret(given, None)
    error = excinfo.value
    assert says in error.what + error.hint and error.hint
    for part in given.split():
        assert part not in str(error) or len(part) < 6


# -- `hive settings`: secrets masked ------------------------------------------------------------


def test_hive_settings_masks_secrets_in_text_and_json(monkeypatch, capsys, tmp_path):
    for key in list(os.environ):
        if key.startswith("HIVE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HIVE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("HIVE_API_KEY", HOST_KEY)
    monkeypatch.setenv("HIVE_OAUTH_TOKEN", HOST_TOKEN)
    monkeypatch.setenv("HIVE_DB_URL", "postgresql+psycopg://hive:pa55word@db/hive")
    monkeypatch.setenv("HIVE_MODEL_BASE_URL", "http://gateway:4000")
    monkeypatch.setenv(
        "HIVE_AGENT_EXTRA_ENV",
        json.dumps(
            {
                "ANTHROPIC_BASE_URL": "http://127.0.0.1:9999",
                "ANTHROPIC_API_KEY": "extra-key-value",
                "GITHUB_TOKEN": "ghp_extra-token-value",
                "my_secret": "extra-secret-value",
                "HTTP_PROXY": "http://user:proxy-pass@proxy:3128",
                "OTHER": "visible",
            }
        ),
    )
    secrets = [
        HOST_KEY,
        HOST_TOKEN,
        "pa55word",
        "extra-key-value",
        "extra-token-value",
        "extra-secret-value",
        "proxy-pass",
    ]

    assert cli.run(["settings", "--json"]) == 0
    out = capsys.readouterr().out
    values = json.loads(out)
    assert values["api_key"] == values["oauth_token"] == "**********"
    extra = values["agent_extra_env"]
    assert extra["ANTHROPIC_API_KEY"] == extra["GITHUB_TOKEN"] == extra["my_secret"] == "**********"
    assert extra["OTHER"] == "visible" and extra["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9999"
    assert values["model_base_url"] == "http://gateway:4000"
    assert values["db_url"] == "postgresql+psycopg://hive:***@db/hive"

    assert cli.run(["settings"]) == 0
    text = capsys.readouterr().out
    assert "api_key" in text and "**********" in text and "visible" in text
    for secret in secrets:
        assert secret not in out and secret not in text, secret


def test_an_auth_file_the_agent_replaced_by_a_link_or_a_fifo_is_no_login(tmp_path: Path) -> None:
    """The agent can write its own ~/.claude: hive-c0re (root) must neither follow a symlink it
    planted to a host file nor hang on a FIFO."""
    claude_dir = tmp_path / ".claude"
    claude_dir.mkdir()
    host_json = tmp_path / "host.json"
    host_json.write_text('{"kind": "api_key", "secret": "sk-ant-host-secret"}')
    (claude_dir / AUTH_FILE).symlink_to(host_json)
    assert credential_env(claude_dir) == {}
    (claude_dir / AUTH_FILE).unlink()
    os.mkfifo(claude_dir / AUTH_FILE)
    assert credential_env(claude_dir) == {}
