"""Logging of hive-c0re: a human text format, or one JSON object per line for log shippers.

    log.info("turn finished", extra={"agent": "alice", "turn_id": turn_id})

text:  2026-01-02 03:04:05,678 INFO    activities.turns: turn finished
json:  {"ts": "2026-01-02T03:04:05.678Z", "level": "INFO", "logger": "activities.turns",
        "msg": "turn finished", "agent": "alice", "turn_id": "…"}

The JSON formatter is ours rather than python-json-logger's on purpose: keeping this output with
that library takes overriding the very methods written here (its extras overwrite the record's
own fields, a dict message is spread into the object instead of written as `msg`, timestamps
and datetime extras come out in another format, and a self-referencing extra loses the whole
line), so it would add a dependency without removing code.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

__all__ = ["TEXT_FORMAT", "JsonFormatter", "setup_logging"]

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",  # Python 3.12+
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (ISO 8601, UTC), level, logger, msg, the `extra=` fields,
    and `exc` / `stack` when there is a traceback. Newlines inside values are escaped, so a
    record is always exactly one line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        payload: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            # setdefault: an extra called e.g. "ts" must not hide the record's own field.
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                payload.setdefault(key, value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        try:
            return json.dumps(payload, ensure_ascii=False, default=str)
        except ValueError:  # e.g. a circular extra: keep the line, lose that detail
            return json.dumps(
                {k: v if isinstance(v, str) else repr(v) for k, v in payload.items()},
                ensure_ascii=False,
            )


class _HiveHandler(logging.StreamHandler[TextIO]):
    """The handler `setup_logging` installs, told apart from others so it can be replaced."""


def setup_logging(
    level: str, fmt: Literal["text", "json"] = "text", *, stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record at `level` ("debug", "info", …) or above to `stream` (default
    stderr) in `fmt`. Calling it again replaces its previous handler; handlers installed by
    others (e.g. pytest's) are left alone. Returns the handler."""
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    elif fmt == "text":
        formatter = logging.Formatter(TEXT_FORMAT)
    else:
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    handler = _HiveHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.setLevel(level.upper())
    for old in [h for h in root.handlers if isinstance(h, _HiveHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    return handler
