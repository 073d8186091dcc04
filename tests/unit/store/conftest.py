from __future__ import annotations

from pathlib import Path

import pytest

from hyperhive.store.db import make_engine, migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_engine(request: pytest.FixtureRequest, tmp_path: Path):
    """A freshly migrated store, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hive.db'}"
    else:
        url = str(request.getfixturevalue("fresh_postgres_url"))
    eng = make_engine(url)
    migrate(eng)
    yield eng
    eng.dispose()
