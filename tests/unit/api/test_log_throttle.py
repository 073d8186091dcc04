"""A refusal a client can cause in a loop is one log line a minute, saying how many it is."""

from __future__ import annotations

import logging

import pytest

from api.log_throttle import REFUSED_SESSION, ThrottleRepeats


def test_repeats_are_held_back_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("api.log_throttle.time.monotonic", lambda: now[0])
    throttle = ThrottleRepeats((REFUSED_SESSION,), every_s=60)

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("mcp", logging.WARNING, __file__, 1, msg, (32,), None)

    refused = f"{REFUSED_SESSION}: %d sessions are already open"
    assert throttle.filter(record(refused))
    assert not any(throttle.filter(record(refused)) for _ in range(9_999))
    assert throttle.filter(record("something else"))  # other lines are never held back
    now[0] += 61
    shown = record(refused)
    assert throttle.filter(shown)
    assert shown.getMessage() == (
        f"{REFUSED_SESSION}: 32 sessions are already open (9999 more like it in the last 60 s)"
    )
