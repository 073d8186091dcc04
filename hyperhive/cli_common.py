"""What every `hive` command on the admin socket shares, whichever module holds it
(hyperhive.cli_admin, hyperhive.cli_login): its exit codes and its `--json` output."""

from __future__ import annotations

import json
from typing import Any

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))
