"""What every `hive` command on the admin socket shares, whichever module holds it
(hive_c0re.cli_admin, hive_c0re.cli_login): its exit codes and its output, which carries text
agents wrote (statuses, messages, approval descriptions, claude's stream) and so is made safe
for the operator's terminal.

Exit codes (README, "Commands"): 0 done; 1 refused, nothing changed; 2 usage, or a setup
problem the user must fix (argparse uses 2 too); 3 no hive-c0re answers on the admin socket, so
a script can tell "start it" from "fix the command line"."""

from __future__ import annotations

import json
import sys
import unicodedata
from typing import Any, TextIO

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

# Bidi overrides and isolates reorder what the terminal shows (the "Trojan Source" trick);
# line and paragraph separators break lines where none is seen.
_INVISIBLE_CONTROLS = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """`text` with every control character shown as an escape (`\\x1b`), so an agent's words can
    never move the cursor, clear the screen, retitle the window or reorder a line. Newlines and
    tabs stay."""
    return "".join(
        _escape(c)
        if c not in "\n\t" and (unicodedata.category(c) == "Cc" or c in _INVISIBLE_CONTROLS)
        else c
        for c in text
    )


def say(*parts: object, file: TextIO | None = None) -> None:
    """print(), made terminal-safe."""
    print(terminal_safe(" ".join(str(p) for p in parts)), file=file or sys.stdout)


def print_json(value: Any, *, indent: int | None = 2) -> None:
    """`value` as JSON safe for a terminal (indent=None: one line, for a stream of values)."""
    # json escapes C0 controls itself; C1 (e.g. \x9b, a one-byte CSI) and the invisible ones
    # it leaves raw with ensure_ascii=False, so they are escaped here, still as valid JSON.
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    print("".join(f"\\u{ord(c):04x}" if _needs_json_escape(c) else c for c in text))


def _needs_json_escape(char: str) -> bool:
    return 0x7F <= ord(char) <= 0x9F or char in _INVISIBLE_CONTROLS
