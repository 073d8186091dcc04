"""`hive login NAME`: store an agent's own credentials through the admin socket.

The secret is read from stdin when it is not a terminal, else typed or pasted at a prompt without
echo, never from argv (visible to every user in `ps`). Its kind (OAuth token, API key,
.credentials.json) is what `--kind` says, else what it looks like; a lone token amid other text
(what `claude setup-token` prints around it) is picked out. Input that cannot be right raises
InputRefused (exit 1: nothing was sent, nothing changed); errors never show the input.
hive_c0re.cli_admin registers the command beside the others.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys

from hive_c0re.cli_common import EXIT_OK, print_json
from hyperhive.admin_client import AdminClient
from hyperhive.errors import HiveError


class InputRefused(HiveError):
    """What was given on stdin cannot be right (exit 1: nothing was sent, nothing changed)."""


# `hive login --kind` → the protocol's kind (hyperhive.credentials.CredentialKind).
LOGIN_KINDS = {
    "oauth-token": "oauth_token",
    "api-key": "api_key",
    "credentials-json": "credentials_json",
}
KIND_NAMES = {
    "oauth_token": "OAuth token",
    "api_key": "API key",
    "credentials_json": ".credentials.json",
}
# Far above any real token or .credentials.json; hive-c0re refuses over 16 KiB anyway.
MAX_LOGIN_INPUT = 64 * 1024
_TOKEN = re.compile(r"sk-ant-[A-Za-z0-9_\-]+")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_KIND_HINT = "pass --kind oauth-token, --kind api-key or --kind credentials-json"


def read_secret(name: str, kind: str | None) -> str:
    """The credential from stdin when it is not a terminal (`hive login bob < token.txt`,
    `claude setup-token | hive login bob`), else typed or pasted at a prompt without echo.
    Never from argv: that is visible to every user in `ps`."""
    stdin = sys.stdin
    if stdin is not None and not stdin.isatty():
        text = stdin.read(MAX_LOGIN_INPUT + 1)
        if len(text) > MAX_LOGIN_INPUT:
            raise InputRefused(
                f"the input is over {MAX_LOGIN_INPUT // 1024} KiB: not a token, key or "
                ".credentials.json",
                "give only the token, the key or the file",
            )
    else:
        what = KIND_NAMES[kind] if kind else "OAuth token or API key"
        try:
            text = getpass.getpass(
                f"{what} for {name} (not echoed; a .credentials.json: "
                f"`hive login {name} < ~/.claude/.credentials.json`): "
            )
        except EOFError:
            text = ""
    text = text.strip()
    if not text:
        raise InputRefused(
            f"no credential given for {name}: nothing was stored",
            f"pipe it in (`hive login {name} < token.txt`) or paste it at the prompt",
        )
    return text


def pick_secret(text: str, kind: str | None) -> tuple[str, str]:
    """(kind, secret) from what was given: the kind `--kind` says, else the one it looks like:
    `sk-ant-oat…` an OAuth token, `sk-ant-…` an API key, a JSON object a .credentials.json.
    A token inside other text (what `claude setup-token` prints around it) is picked out when
    it is the only one. Errors never show the input."""
    if kind == "credentials_json" or (kind is None and text.startswith("{")):
        if kind is None:
            try:
                is_object = isinstance(json.loads(text), dict)
            except ValueError:
                is_object = False
            if not is_object:
                raise InputRefused(
                    "the input starts like JSON but is not a JSON object",
                    "give the whole ~/.claude/.credentials.json, or " + _KIND_HINT,
                )
        return "credentials_json", text
    words = _ANSI.sub(" ", text).split()
    if len(words) > 1:  # a whole word that is a token, amid other words: take it
        found = {w.strip("\"'`.,;:") for w in words}
        found = {w for w in found if _TOKEN.fullmatch(w)}
        if len(found) == 1:
            text = found.pop()
        elif found:
            raise InputRefused(
                f"the input holds {len(found)} different sk-ant-… tokens",
                "give only the one to store",
            )
    if kind is not None:
        return kind, text  # hive-c0re checks that it fits
    if text.startswith("sk-ant-oat"):
        return "oauth_token", text
    if text.startswith("sk-ant-"):
        return "api_key", text
    raise InputRefused(
        "that is not a credential hive can recognise (an OAuth token starts with sk-ant-oat, "
        "an API key with sk-ant-, a .credentials.json with {)",
        _KIND_HINT + " if it is one, or use `claude setup-token` for a token",
    )


def cmd_login(admin: AdminClient, args: argparse.Namespace) -> int:
    kind = LOGIN_KINDS[args.kind] if args.kind else None
    prompting = sys.stdin is None or sys.stdin.isatty()
    # Before anyone pastes a secret at the prompt: is there a hive-c0re, and such an agent?
    if prompting and args.name not in {a["name"] for a in admin.call("list")}:
        raise InputRefused(f"there is no agent named {args.name!r}", "see `hive status`")
    kind, secret = pick_secret(read_secret(args.name, kind), kind)
    summary = admin.call("login", name=args.name, kind=kind, secret=secret)
    if args.json:
        print_json(summary)
    else:
        shown = KIND_NAMES.get(str(summary.get("kind")), str(summary.get("kind")))
        hint = summary.get("hint") or ""
        print(f"{args.name} logged in with {shown}" + (f" {hint}" if hint else ""))
    return EXIT_OK
