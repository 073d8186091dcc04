"""`hive-agent`: what runs inside an agent's container (never imports temporalio)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from hyperhive import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hive-agent", description="hyperhive's in-container harness."
    )
    parser.add_argument("--version", action="version", version=f"hive-agent {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    build_parser().parse_args(argv)
    build_parser().print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
