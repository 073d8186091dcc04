"""Settings: defaults, the env prefix, and that the README documents every one of them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from hyperhive.settings import HiveSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_match_the_documented_ports_and_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("HIVE_"):
            monkeypatch.delenv(key)
    s = HiveSettings()
    assert (s.dashboard_port, s.temporal_port, s.temporal_ui_port, s.manager_port) == (
        7000,
        7233,
        8233,
        8000,
    )
    assert (s.agent_port_min, s.agent_port_max) == (8100, 8999)
    assert s.state_path == Path(".hive").absolute()
    assert s.run_path == s.state_path / "run"
    assert s.database_url == f"sqlite:///{s.state_path / 'hive.db'}"
    assert s.embedded_temporal and s.temporal_target == "127.0.0.1:7233"
    assert s.core_task_queue == "hive-core" and s.host_task_queue == "hive-host-local"


def test_env_prefix_and_external_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HIVE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("HIVE_TEMPORAL_ADDRESS", "temporal.example:7233")
    monkeypatch.setenv("HIVE_DB_URL", "postgresql+psycopg://hive@db/hive")
    s = HiveSettings()
    assert not s.embedded_temporal
    assert s.temporal_target == "temporal.example:7233"
    assert s.temporal_web_ui() is None
    assert s.database_url == "postgresql+psycopg://hive@db/hive"
    assert s.run_path == tmp_path / "run"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("HIVE_DASHBOARD_PORT", "seventy"),
        ("HIVE_TEMPORAL_PORT", "70000"),
        ("HIVE_CONTAINER_BACKEND", "docker"),
        ("HIVE_HOST_ID", "Not A Host"),
        ("HIVE_AGENT_PORT_MIN", "9500"),
    ],
)
def test_bad_values_are_rejected(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError):
        HiveSettings()


def test_readme_documents_every_setting_with_its_default() -> None:
    table = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(HIVE_[A-Z_]+)` \| ([^|]*) \|", README.read_text(), re.M)
    }
    for name, field in HiveSettings.model_fields.items():
        var = f"HIVE_{name.upper()}"
        assert var in table, f"README's configuration table lacks {var}"
        default = field.default
        if isinstance(default, bool):
            default = str(default).lower()
        if isinstance(default, str | int) and default not in ("", None):
            assert f"`{default}`" in table[var], f"README gives the wrong default for {var}"
