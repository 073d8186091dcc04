"""The transcripts record_transcripts.py saved: claude's stdout per scenario, and its index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRANSCRIPTS = Path(__file__).parent / "transcripts"
INDEX: dict[str, Any] = json.loads((TRANSCRIPTS / "index.json").read_text())


def lines(scenario: str) -> list[str]:
    return (TRANSCRIPTS / f"{scenario}.jsonl").read_text().splitlines()
