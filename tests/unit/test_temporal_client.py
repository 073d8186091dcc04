"""The Temporal connect options: TLS and API key settings, the files they name, their errors."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.service import TLSConfig

from hyperhive.errors import StartupError
from hyperhive.settings import HiveSettings
from hyperhive.temporal_client import connect, connect_options

CLUSTER = "temporal.example:7233"
CA = b"-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nclient\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nsecret-key-bytes\n-----END PRIVATE KEY-----\n"
API_KEY = "tmprl-api-key-0123456789"


@pytest.fixture(autouse=True)
def _no_hive_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("HIVE_"):
            monkeypatch.delenv(key)


def settings(**values: Any) -> HiveSettings:
    values.setdefault("temporal_address", CLUSTER)
    return HiveSettings(**values)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_plain_by_default() -> None:
    options = connect_options(settings())
    assert options.tls is False and options.api_key is None
    assert connect_options(HiveSettings()).tls is False  # the embedded server


def test_tls_with_the_system_cas() -> None:
    options = connect_options(settings(temporal_tls=True))
    assert options.tls is True and options.api_key is None


def test_mtls_reads_every_file(tmp_path: Path) -> None:
    options = connect_options(
        settings(
            temporal_tls_ca=write(tmp_path, "ca.pem", CA),
            temporal_tls_cert=write(tmp_path, "client.pem", CERT),
            temporal_tls_key=write(tmp_path, "client.key", KEY),
            temporal_tls_server_name="temporal.internal",
        )
    )
    assert options.tls == TLSConfig(
        server_root_ca_cert=CA, client_cert=CERT, client_private_key=KEY, domain="temporal.internal"
    )
    assert b"secret-key-bytes" not in repr(options).encode()


def test_any_tls_setting_turns_tls_on(tmp_path: Path) -> None:
    # TLS=false does not undo a CA: a file given is a file meant to be used.
    ca_only = connect_options(settings(temporal_tls_ca=write(tmp_path, "ca.pem", CA)))
    assert ca_only.tls == TLSConfig(server_root_ca_cert=CA)
    named = connect_options(settings(temporal_tls_server_name="temporal.internal"))
    assert named.tls == TLSConfig(domain="temporal.internal")


def test_api_key_turns_tls_on_and_stays_hidden() -> None:
    s = settings(temporal_api_key=API_KEY)
    options = connect_options(s)
    assert options.tls is True and options.api_key == API_KEY
    assert API_KEY not in repr(options) and API_KEY not in repr(s)
    assert API_KEY not in str(s.model_dump(mode="json"))


def test_api_key_file_is_read_and_trimmed(tmp_path: Path) -> None:
    key_file = write(tmp_path, "api-key", f"{API_KEY}\n".encode())
    s = settings(temporal_api_key_file=key_file)
    options = connect_options(s)
    assert options.api_key == API_KEY and options.tls is True
    assert API_KEY not in repr(s)


def test_api_key_and_mtls_together(tmp_path: Path) -> None:
    options = connect_options(
        settings(
            temporal_api_key=API_KEY,
            temporal_tls_ca=write(tmp_path, "ca.pem", CA),
        )
    )
    assert options.api_key == API_KEY and options.tls == TLSConfig(server_root_ca_cert=CA)


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ("temporal_tls_cert", "HIVE_TEMPORAL_TLS_KEY"),
        ("temporal_tls_key", "HIVE_TEMPORAL_TLS_CERT"),
    ],
)
def test_cert_and_key_come_together(tmp_path: Path, given: str, missing: str) -> None:
    with pytest.raises(ValidationError) as raised:
        settings(**{given: write(tmp_path, "f.pem", CERT)})
    assert f"HIVE_{given.upper()} is set but {missing} is not" in str(raised.value)


def test_api_key_and_its_file_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as raised:
        settings(temporal_api_key=API_KEY, temporal_api_key_file=write(tmp_path, "k", b"k"))
    message = str(raised.value)
    assert "HIVE_TEMPORAL_API_KEY and HIVE_TEMPORAL_API_KEY_FILE are both set" in message
    assert API_KEY not in message


@pytest.mark.parametrize(
    "values", [{"temporal_tls": True}, {"temporal_api_key": API_KEY}, {"temporal_tls_ca": "/ca"}]
)
def test_the_embedded_server_has_no_tls(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="without HIVE_TEMPORAL_ADDRESS"):
        HiveSettings(**values)


def test_empty_variables_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CA", "CERT", "KEY"):
        monkeypatch.setenv(f"HIVE_TEMPORAL_TLS_{name}", "")
    monkeypatch.setenv("HIVE_TEMPORAL_API_KEY", "")
    monkeypatch.setenv("HIVE_TEMPORAL_API_KEY_FILE", " ")
    s = HiveSettings()  # no address: would be refused if any of them counted
    assert (s.temporal_tls_ca, s.temporal_api_key, s.temporal_api_key_file) == (None, None, None)


def test_bad_server_names_are_refused() -> None:
    with pytest.raises(ValidationError):
        settings(temporal_tls_server_name="https://temporal.internal")


SETTING_OF = {
    "temporal_tls_ca": "HIVE_TEMPORAL_TLS_CA",
    "temporal_tls_cert": "HIVE_TEMPORAL_TLS_CERT",
    "temporal_tls_key": "HIVE_TEMPORAL_TLS_KEY",
    "temporal_api_key_file": "HIVE_TEMPORAL_API_KEY_FILE",
}


def with_one_bad_file(tmp_path: Path, field: str, bad: Path) -> HiveSettings:
    """Every file readable but `field`'s, so the error can only be about that one."""
    values: dict[str, Any] = {
        "temporal_tls_ca": write(tmp_path, "ca.pem", CA),
        "temporal_tls_cert": write(tmp_path, "client.pem", CERT),
        "temporal_tls_key": write(tmp_path, "client.key", KEY),
        "temporal_api_key_file": write(tmp_path, "api-key", API_KEY.encode()),
    }
    values[field] = bad
    return settings(**values)


@pytest.mark.parametrize("field", SETTING_OF)
def test_a_missing_file_names_its_setting_and_path(tmp_path: Path, field: str) -> None:
    missing = tmp_path / "nowhere" / "file.pem"
    with pytest.raises(StartupError) as raised:
        connect_options(with_one_bad_file(tmp_path, field, missing))
    assert raised.value.what.startswith(f"{SETTING_OF[field]}={missing}: cannot read it")
    assert "No such file" in raised.value.what
    assert SETTING_OF[field] in raised.value.hint


@pytest.mark.parametrize("field", SETTING_OF)
def test_an_empty_file_names_its_setting(tmp_path: Path, field: str) -> None:
    empty = write(tmp_path, "empty", b"\n")
    with pytest.raises(StartupError) as raised:
        connect_options(with_one_bad_file(tmp_path, field, empty))
    assert raised.value.what == f"{SETTING_OF[field]}={empty}: the file is empty"


def test_an_unreadable_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(StartupError) as raised:
        connect_options(settings(temporal_tls_ca=tmp_path))  # a directory
    assert raised.value.what.startswith(f"HIVE_TEMPORAL_TLS_CA={tmp_path}: cannot read it")


def test_an_api_key_file_that_is_not_text(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match=r"HIVE_TEMPORAL_API_KEY_FILE=.*not UTF-8"):
        connect_options(settings(temporal_api_key_file=write(tmp_path, "k", b"\xff\xfe")))


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def test_connect_reads_the_files_before_dialing(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="HIVE_TEMPORAL_TLS_CA="):
        await connect(settings(temporal_tls_ca=tmp_path / "absent.pem"), wait_s=0)


async def test_an_unreachable_tls_cluster_points_at_the_tls_settings(tmp_path: Path) -> None:
    s = settings(
        temporal_address=closed_port(),
        temporal_tls_ca=write(tmp_path, "ca.pem", CA),
        temporal_tls_server_name="temporal.internal",
    )
    with pytest.raises(StartupError) as raised:
        await connect(s, wait_s=0.3)
    hint = raised.value.hint
    assert "HIVE_TEMPORAL_TLS_CA" in hint and str(tmp_path / "ca.pem") in hint
    assert "'temporal.internal' (HIVE_TEMPORAL_TLS_SERVER_NAME)" in hint
    assert "HIVE_TEMPORAL_TLS_CERT" in hint


async def test_an_unreachable_plain_cluster_mentions_tls() -> None:
    with pytest.raises(StartupError) as raised:
        await connect(settings(temporal_address=closed_port()), wait_s=0.3)
    assert "HIVE_TEMPORAL_TLS=true" in raised.value.hint
