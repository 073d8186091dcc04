"""What the bwrap sandbox is shown of hive's code (activities.backends.bwrap_layout)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import agent_harness
from activities.backends.bwrap_layout import SRC_DIR, hive_layout
from hyperhive.settings import HiveSettings


def test_the_sandbox_is_shown_the_harness_alone(tmp_path: Path) -> None:
    settings = HiveSettings(state_dir=tmp_path / "state", run_dir=tmp_path / "run")
    sources = {
        inside: host
        for host, inside in hive_layout(settings).binds
        if PurePosixPath(inside).parent == SRC_DIR
    }
    harness = Path(agent_harness.__file__).resolve().parent
    assert sources == {str(SRC_DIR / "agent_harness"): str(harness)}
