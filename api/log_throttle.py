"""At most one log line a minute per kind of refusal a client can cause at will.

The MCP SDK logs a warning for every `initialize` past HIVE_MAX_MCP_SESSIONS_PER_AGENT: an agent
opening sessions in a loop wrote 10,000 lines (1.2 MB) in 8 s. The first line of a kind is let
through; the same kind is then held back for `every_s`, and the next one let through says how
many were held back.
"""

from __future__ import annotations

import logging
import time

REFUSED_SESSION = "Refusing to open a new session"


class ThrottleRepeats(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...], every_s: float = 60.0) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._every_s = every_s
        # prefix → (when one was last let through, how many were held back since)
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        prefix = next((p for p in self._prefixes if message.startswith(p)), None)
        if prefix is None:
            return True
        now = time.monotonic()
        last, held = self._seen.get(prefix, (float("-inf"), 0))
        if now - last < self._every_s:
            self._seen[prefix] = (last, held + 1)
            return False
        self._seen[prefix] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {self._every_s:.0f} s)"
        return True


def throttle_refused_sessions() -> None:
    """Installed once on the SDK's session-manager logger (idempotent)."""
    logger = logging.getLogger("mcp.server.streamable_http_manager")
    if not any(isinstance(f, ThrottleRepeats) for f in logger.filters):
        logger.addFilter(ThrottleRepeats((REFUSED_SESSION,)))
