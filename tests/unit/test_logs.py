"""Logging (hyperhive/logs.py): what `HIVE_LOG_FORMAT=json` and `=text` put on stderr."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from hyperhive.logs import setup_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_json_is_one_object_per_line_with_the_context_fields() -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    log = logging.getLogger("activities.turns")

    log.info(
        "turn of %s finished\nwith a second line",
        "alice",
        extra={"agent": "alice", "workflow_id": "hive-agent-alice", "turn_id": "t-7"},
    )
    log.debug("below the level: not written")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("turn failed", extra={"agent": "bob", "when": datetime(2026, 1, 2)})

    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "turn of alice finished\nwith a second line"
    assert first["level"] == "INFO"
    assert first["logger"] == "activities.turns"
    assert (first["agent"], first["workflow_id"], first["turn_id"]) == (
        "alice",
        "hive-agent-alice",
        "t-7",
    )
    ts = datetime.fromisoformat(first["ts"].replace("Z", "+00:00"))
    assert ts.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - ts) < timedelta(minutes=1)
    assert second["level"] == "ERROR" and second["agent"] == "bob"
    assert second["when"] == "2026-01-02 00:00:00"  # not JSON by nature: written as text
    assert "RuntimeError: boom" in second["exc"]
    assert not {"args", "levelno", "pathname", "exc_info"} & (first.keys() | second.keys())


def test_an_extra_cannot_replace_the_records_own_fields() -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    logging.getLogger("hyperhive.x").warning("hello", extra={"ts": "forged", "level": "x"})
    record = json.loads(out.getvalue())
    assert record["ts"] != "forged" and record["level"] == "WARNING"


def test_text_is_the_human_format_and_leaves_extras_out() -> None:
    out = io.StringIO()
    setup_logging("warning", "text", stream=out)
    log = logging.getLogger("hyperhive.broker")

    log.info("below the level: not written")
    log.warning("could not wake agent %s", "bob", extra={"agent": "bob"})

    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING hyperhive\.broker: could not wake agent "
        r"bob\n",
        out.getvalue(),
    )


def test_setting_up_again_replaces_the_previous_output() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", "text", stream=first)
    setup_logging("info", "json", stream=second)
    logging.getLogger("hyperhive").info("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["msg"] == "once"
