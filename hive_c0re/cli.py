"""The `hive` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import select
import sys
from collections.abc import Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from hive_c0re.cli_admin import add_commands
from hive_c0re.cli_common import EXIT_OK
from hyperhive import __version__
from hyperhive.errors import HiveError
from hyperhive.logs import setup_logging
from hyperhive.settings import HiveSettings


def load_settings() -> HiveSettings:
    try:
        return HiveSettings()
    except ValidationError as exc:
        problems = "\n".join(
            f"  HIVE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        print(
            f"hive: invalid settings:\n{problems}\n  → fix these environment variables "
            "(see the configuration table in README.md)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def _configure_logging(settings: HiveSettings) -> None:
    setup_logging(settings.log_level, settings.log_format)


def _cmd_up(_: argparse.Namespace) -> int:
    from hive_c0re.up import run

    settings = load_settings()
    _configure_logging(settings)
    return run(settings, with_temporal=True)


def _cmd_c0re(_: argparse.Namespace) -> int:
    from hive_c0re.up import run

    settings = load_settings()
    _configure_logging(settings)
    return run(settings, with_temporal=False)


MASK = "**********"  # what pydantic shows for a SecretStr (HIVE_API_KEY, HIVE_OAUTH_TOKEN)
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


def _mask_url(url: str) -> str:
    """A URL without the password in it (`postgresql+psycopg://hive:***@db/hive`)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def shown_settings(settings: HiveSettings) -> dict[str, Any]:
    """The settings as `hive settings` prints them: secrets masked (SecretStr fields, values of
    HIVE_AGENT_EXTRA_ENV named like *KEY*/*TOKEN*/*SECRET*, passwords in URLs)."""
    values = settings.model_dump(mode="json")
    values["agent_extra_env"] = {
        k: MASK if _SECRET_NAME.search(k) else _mask_url(v)
        for k, v in settings.agent_extra_env.items()
    }
    for key in ("db_url", "model_base_url"):
        if isinstance(values.get(key), str):
            values[key] = _mask_url(values[key])
    values |= {
        "state_dir (resolved)": str(settings.state_path),
        "run_dir (resolved)": str(settings.run_path),
        "db_url (resolved)": _mask_url(settings.database_url),
        "temporal (resolved)": settings.temporal_target,
    }
    return values


def _cmd_settings(args: argparse.Namespace) -> int:
    values = shown_settings(load_settings())
    if args.json:
        print(json.dumps(values, indent=2))
    else:
        width = max(map(len, values))
        for key, value in values.items():
            print(f"{key:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hive",
        description="hyperhive: a swarm of Claude Code agents on Temporal.",
    )
    parser.add_argument("--version", action="version", version=f"hive {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up", help="start everything: embedded Temporal (unless HIVE_TEMPORAL_ADDRESS), hive-c0re"
    )
    up.set_defaults(func=_cmd_up)

    c0re = commands.add_parser(
        "c0re", help="start the hive-c0re daemon alone, against a running Temporal"
    )
    c0re.set_defaults(func=_cmd_c0re)

    show = commands.add_parser("settings", help="print the effective settings")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_cmd_settings)

    add_commands(commands, load_settings)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except HiveError as e:
        print(f"hive: {e}", file=sys.stderr)
        return 2
    return code


def _stdout_reader_gone() -> bool:
    """Whether the reader of stdout closed its end (a pipe or socket whose other end is gone
    polls as an error): only then is a BrokenPipeError ours to swallow."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in poller.poll(0))
    except (OSError, ValueError):
        return False


def _stdout_to_devnull() -> None:
    """Point fd 1 at /dev/null: what is still buffered for the reader that left is flushed there
    instead of failing again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The `hive` console script. Ends the process without interpreter teardown: after a
    Temporal client has run, tearing down its native runtime at exit sometimes crashes
    (SIGSEGV/SIGABRT after the work is done), which would turn a success into a failure.

    A reader that closes its end early (`hive status | head -1`, `hive logs bob -f | grep -m1 x`)
    took what it wanted: `hive` then ends quietly, with the command's own code (0 when it was
    cut short while printing), not a traceback. A broken pipe that is not stdout's is a failure.
    """
    code = EXIT_OK
    try:
        code = run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        _stdout_to_devnull()
    # The flushes os._exit would skip; a closed stderr has nobody left to tell.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BrokenPipeError):
            stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    main()
