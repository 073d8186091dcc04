"""hive-agent's version: the installed hyperhive distribution's, which ships the harness.

Read from the distribution's metadata, not from the kernel's `hyperhive.__version__`: the harness
runs in sandboxes that show it alone (activities/backends/bwrap_layout.py), never the kernel.
"""

from __future__ import annotations

import functools

DISTRIBUTION = "hyperhive"  # [project] name in pyproject.toml
# A source tree on sys.path without an installed distribution (the sandboxes show hive's venv,
# which has it).
UNKNOWN = "unknown"


@functools.cache
def hive_agent_version() -> str:
    # Imported here: importlib.metadata takes ~20 ms to import, and `hive-agent run` (the start
    # of every sandboxed turn) never needs the version.
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN
