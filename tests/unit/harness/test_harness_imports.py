"""The in-container modules stay free of the host's heavy dependencies."""

from __future__ import annotations

import subprocess
import sys

MODULES = (
    "agent_harness.stream_parser",
    "agent_harness.claude_command",
    "agent_harness.wake_prompt",
)
FORBIDDEN = ("temporalio", "sqlalchemy", "sqlmodel", "fastapi")


def test_harness_modules_do_not_import_host_dependencies() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
