"""`hive approvals|approve|deny|spawn|kill|destroy|start|restart`: lifecycle from a shell.

They talk to Temporal and the store directly, with the daemon's settings; the signals they send
are the same ones the dashboard and `temporal workflow signal` send.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable

from hyperhive.errors import HiveError, StartupError
from hyperhive.lifecycle import Lifecycle
from hyperhive.models import Decision
from hyperhive.settings import HiveSettings
from hyperhive.store import approvals as approval_store
from hyperhive.store.db import StoreError, make_engine
from hyperhive.temporal_client import connect


def _run(settings: HiveSettings, action: Callable[[Lifecycle], Awaitable[str]]) -> int:
    async def go() -> str:
        engine = make_engine(settings.database_url)
        try:
            client = await connect(settings, wait_s=5)
            return await action(Lifecycle(client, settings, engine))
        finally:
            engine.dispose()

    try:
        print(asyncio.run(go()))
    except (HiveError, StoreError) as e:
        print(f"hive: {e}")
        return 1
    return 0


def cmd_approvals(settings: HiveSettings, args: argparse.Namespace) -> int:
    try:
        engine = make_engine(settings.database_url)
        rows = approval_store.list_approvals(engine)
    except StoreError as e:
        print(f"hive: {e}")
        return 1
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return 0
    if not rows:
        print("no approvals")
    for r in rows:
        decided = f" by {r.decided_by}" if r.decided_by else ""
        print(
            f"#{r.id:<4} {r.status:<9}{decided:<12} {r.kind:<12} {r.requester:<9} {r.description}"
        )
    return 0


def cmd_decide(settings: HiveSettings, args: argparse.Namespace, approved: bool) -> int:
    decision = Decision(approved=approved, by=args.by or getpass.getuser(), note=args.note)

    async def act(lifecycle: Lifecycle) -> str:
        approval = await lifecycle.decide(args.id, decision)
        verb = "approved" if approved else "denied"
        return f"#{approval.id} {verb} ({approval.description})"

    return _run(settings, act)


def cmd_spawn(settings: HiveSettings, args: argparse.Namespace) -> int:
    async def act(lifecycle: Lifecycle) -> str:
        workflow_id = await lifecycle.request_spawn(args.name, args.purpose, requester="operator")
        return f"spawn of {args.name} requested ({workflow_id}); approve it with `hive approve`"

    return _run(settings, act)


def cmd_control(settings: HiveSettings, args: argparse.Namespace) -> int:
    by = getpass.getuser()

    async def act(lifecycle: Lifecycle) -> str:
        if args.command in ("kill", "stop", "destroy"):
            outcome = await lifecycle.kill(args.name, by=by, destroy=args.command == "destroy")
        else:
            outcome = await lifecycle.start(args.name, by=by, restart=args.command == "restart")
        return outcome.detail

    if args.command == "destroy" and not args.yes:
        raise StartupError(
            f"destroy removes the container of {args.name} (its repos and history stay)",
            f"run `hive destroy {args.name} --yes` to confirm",
        )
    return _run(settings, act)


def add_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    load: Callable[[], HiveSettings],
) -> None:
    approvals = commands.add_parser("approvals", help="list approvals, pending first")
    approvals.add_argument("--json", action="store_true")
    approvals.set_defaults(func=lambda a: cmd_approvals(load(), a))

    for verb, approved in (("approve", True), ("deny", False)):
        p = commands.add_parser(verb, help=f"{verb} a pending approval (sends `decide`)")
        p.add_argument("id", type=int, help="approval number (see `hive approvals`)")
        p.add_argument("--note", default="", help="a note for the requester")
        p.add_argument("--by", default="", help="who decides (default: your user name)")
        p.set_defaults(func=lambda a, approved=approved: cmd_decide(load(), a, approved))

    spawn = commands.add_parser("spawn", help="request a new agent (needs an approval)")
    spawn.add_argument("name")
    spawn.add_argument("--purpose", required=True, help="what the agent is for")
    spawn.set_defaults(func=lambda a: cmd_spawn(load(), a))

    for verb, text in (
        ("kill", "stop an agent's turn loop and container (messages are kept)"),
        ("stop", "the same as kill"),
        ("destroy", "kill and remove the container (repos and history are kept)"),
        ("start", "start a stopped agent"),
        ("restart", "stop and start an agent"),
    ):
        p = commands.add_parser(verb, help=text)
        p.add_argument("name")
        if verb == "destroy":
            p.add_argument("--yes", action="store_true", help="confirm")
        p.set_defaults(func=lambda a: cmd_control(load(), a))
