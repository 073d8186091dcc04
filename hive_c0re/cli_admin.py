"""`hive status|list|approvals|approve|deny|send|spawn|kill|stop|start|restart|destroy|logs|urls`
and `hive login` (its own module: hive_c0re.cli_login): the admin socket from a shell. Every
command asks the running hive-c0re over `<run>/host.sock` (see hyperhive/admin_protocol.py) and
prints a table, or with `--json` the raw result.

Exit codes (hive_c0re.cli_common): 0 done, 1 hive-c0re refused (nothing changed) or `hive login`
refused its input, 2 usage or a setup problem (the socket's permissions or path), 3 no hive-c0re
answers (not running, or it stopped answering).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from hive_c0re.cli_common import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    print_json,
    say,
)
from hive_c0re.cli_hosts import HOST_HEADERS, agent_state, host_rows, socket_time
from hive_c0re.cli_login import LOGIN_KINDS, InputRefused, cmd_login
from hyperhive.admin_client import AdminClient, AdminRefused, AdminUnavailable, AdminUnusable
from hyperhive.claude_stream.events import NOISE, NoiseEvent, StreamEvent, parse_object
from hyperhive.claude_stream.render import render
from hyperhive.errors import HiveError
from hyperhive.settings import HiveSettings

FOLLOW_POLL_S = 1.0
STATUS_TEXT_WIDTH = 40

Handler = Callable[[AdminClient, argparse.Namespace], int]


class UsageError(HiveError):
    """The command line asks for something the CLI will not send."""


def _fail(e: HiveError) -> None:
    # A closed stderr must not turn the failure into a BrokenPipeError (which `hive` reads as
    # its reader having gone away, exit 0): the exit code still says what happened.
    with contextlib.suppress(BrokenPipeError):
        say(f"hive: {e.what}" + (f"\n  → {e.hint}" if e.hint else ""), file=sys.stderr)


def _run(load: Callable[[], HiveSettings], handler: Handler, args: argparse.Namespace) -> int:
    try:
        with AdminClient(load().host_socket_path) as admin:
            return handler(admin, args)
    except AdminRefused as e:
        _fail(e)
        # A protocol error means this CLI and hive-c0re disagree: not the user's request.
        return EXIT_REFUSED if e.code in ("refused", "internal") else EXIT_USAGE
    except InputRefused as e:
        _fail(e)
        return EXIT_REFUSED
    except AdminUnavailable as e:
        _fail(e)
        return EXIT_UNAVAILABLE
    except (AdminUnusable, UsageError) as e:
        _fail(e)
        return EXIT_USAGE


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""  # hive-c0re fills in the socket peer's user name


# -- formatting -------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(r) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _when(value: str | None, now: datetime | None = None) -> str:
    """'3m ago' for an ISO timestamp from the socket; '-' for none."""
    if not value:
        return "-"
    then = socket_time(value)
    if then is None:
        return value
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    if seconds < 0:
        return then.strftime("%Y-%m-%d %H:%M")
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _model(agent: dict[str, Any]) -> str:
    if agent.get("config_host"):
        return f"(on {agent['config_host']})"
    if agent.get("config_problem"):
        return "config broken"
    return agent.get("model") or "(claude's default)"


def _warm(agent: dict[str, Any]) -> str:
    """Whether its claude is running now (the next turn starts at once) or must be started."""
    warm = agent.get("warm")
    if warm is None:
        return "-"  # a hive-c0re that does not say
    return "warm" if warm else "cold"


def agents_table(agents: list[dict[str, Any]]) -> str:
    if not agents:
        return "no agents"
    rows = []
    for a in agents:
        sha = a.get("deployed_sha")
        deployed = (sha[:12] if sha else "-") + (" stale" if a.get("stale") else "")
        rows.append(
            [
                a["name"],
                agent_state(a) + (f" ({a['pending']} pending)" if a.get("pending") else ""),
                _warm(a),
                a["container_status"],
                deployed,
                _model(a),
                a.get("permission_mode") or "-",
                f"${a['spend_today_usd']:.2f} / ${a['spend_total_usd']:.2f}",
                _when(a.get("last_activity_at")),
                a.get("host_id") or "-",
                _clip(a.get("status_text") or "", STATUS_TEXT_WIDTH),
            ]
        )
    return table(
        [
            "NAME",
            "STATE",
            "CLAUDE",
            "CONTAINER",
            "DEPLOYED",
            "MODEL",
            "PERMISSIONS",
            "SPEND TODAY/TOTAL",
            "LAST ACTIVE",
            "HOST",
            "STATUS",
        ],
        rows,
    )


def approvals_table(approvals: list[dict[str, Any]]) -> str:
    if not approvals:
        return "no approvals"
    rows = [
        [
            f"#{a['id']}",
            a["status"],
            a.get("decided_by") or "",
            a["kind"],
            a["agent"],
            a["requester"],
            _when(a.get("created_at")),
            _clip(a["description"], 60),
        ]
        for a in approvals
    ]
    return table(["ID", "STATUS", "BY", "KIND", "AGENT", "REQUESTER", "ASKED", "DESCRIPTION"], rows)


def urls_text(urls: dict[str, Any]) -> str:
    lines = [
        ("dashboard", urls["dashboard"]),
        ("temporal ui", urls.get("temporal_ui") or "-"),
        ("metrics", urls["metrics"]),
        *((f"agent {name}", url) for name, url in sorted(urls.get("agents", {}).items())),
    ]
    if urls.get("access_token_file"):
        # The links open the pages in a browser (which keeps a cookie); scripts send the header.
        lines.append(("scripts", f"Authorization: Bearer $(cat {urls['access_token_file']})"))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in lines)


def render_event(event: dict[str, Any]) -> list[str]:
    """One stored turn event as readable lines, prefixed with its time and id."""
    kind = event.get("kind", "?")
    payload = event.get("payload") or {}
    stamp = (event.get("created_at") or "")[11:19]
    prefix = f"{stamp} #{event.get('id')} "
    if kind == "hive":
        text = payload.get("text") or payload.get("message") or json.dumps(payload)
        return [f"{prefix}[hive] {text}"]
    claude_event: StreamEvent
    if kind == NOISE:
        # The store keeps no text of a line that was not JSON.
        claude_event = NoiseEvent(text="(output claude printed that is not JSON)")
    else:
        claude_event = parse_object(payload, default_type=kind)
    items = render(claude_event)
    lines = []
    for item in items:
        mark = "!" if item.is_error else " "
        first, *rest = item.text.splitlines() or [""]
        lines.append(f"{prefix}{mark}[{item.kind.value}] {first}")
        lines.extend(f"{' ' * len(prefix)}   {line}" for line in rest)
    return lines


# -- commands ---------------------------------------------------------------------------------


def cmd_status(admin: AdminClient, args: argparse.Namespace) -> int:
    status = admin.call("status")
    urls = admin.call("urls")
    if args.json:
        print_json(status | {"urls": urls})
        return EXIT_OK
    workers = "running" if status["workers_running"] else "NOT running"
    say(
        f"hive-c0re {status['version']} on {status['host_id']} · up since "
        f"{_when(status['started_at'])} · workers {workers}\n"
        f"temporal {status['temporal']} (namespace {status['namespace']}) · "
        f"hyperhive {status['hyperhive_rev'][:12]}"
    )
    if status.get("hosts"):  # a hive-c0re from before hosts were recorded does not say
        say()
        say(table(HOST_HEADERS, host_rows(status["hosts"])))
    say()
    say(agents_table(status["agents"]))
    say()
    pending = status["approvals_pending"]
    say(
        f"{pending} approval{'s' if pending != 1 else ''} pending"
        + (" (see `hive approvals`)" if pending else "")
    )
    say(urls_text({**urls, "agents": {}}))
    return EXIT_OK


def cmd_list(admin: AdminClient, args: argparse.Namespace) -> int:
    agents = admin.call("list")
    if args.json:
        print_json(agents)
    else:
        say(agents_table(agents))
    return EXIT_OK


def cmd_approvals(admin: AdminClient, args: argparse.Namespace) -> int:
    approvals = admin.call("approvals", pending_only=args.pending)
    if args.json:
        print_json(approvals)
    else:
        say(approvals_table(approvals))
    return EXIT_OK


def cmd_decide(admin: AdminClient, args: argparse.Namespace) -> int:
    result = admin.call(args.command, id=args.id, note=args.note, by=args.by or _user())
    if args.json:
        print_json(result)
    else:
        approval = result["approval"]
        say(f"#{approval['id']} {result['decision']} ({approval['description']})")
    return EXIT_OK


def cmd_send(admin: AdminClient, args: argparse.Namespace) -> int:
    body = sys.stdin.read() if args.text == "-" else args.text
    result = admin.call("send", to=args.name, body=body)
    if args.json:
        print_json(result)
    else:
        say(f"sent #{result['id']} to {result['recipient']} ({result['pending']} pending)")
    return EXIT_OK


def cmd_spawn(admin: AdminClient, args: argparse.Namespace) -> int:
    extra: dict[str, Any] = {"fresh": True} if args.fresh else {}
    result = admin.call("spawn", name=args.name, purpose=args.purpose, **extra)
    if args.json:
        print_json(result)
    else:
        say(spawn_text(args.name, result))
    return EXIT_OK


def spawn_text(name: str, result: dict[str, Any]) -> str:
    """What `hive spawn` says: the approval to decide, by number, or, when hive-c0re could not
    see it stored in time (a busy worker), where it will show up."""
    approval_id = result.get("approval_id")
    if approval_id is not None:
        return (
            f"spawn of {name} requested: approval #{approval_id} — approve it with "
            f"`hive approve {approval_id}` (or deny it with `hive deny {approval_id}`)"
        )
    return (
        f"spawn of {name} requested ({result['workflow_id']}), but its approval was not stored "
        "yet — find its number with `hive approvals --pending`, then `hive approve ID`"
    )


def cmd_control(admin: AdminClient, args: argparse.Namespace) -> int:
    extra: dict[str, Any] = {}
    if args.command == "destroy":
        if not args.yes:
            raise UsageError(
                f"destroy removes the container of {args.name} (its repos and history stay)",
                f"run `hive destroy {args.name} --yes` to confirm",
            )
        extra["confirm"] = True
    outcome = admin.call(args.command, name=args.name, by=_user(), **extra)
    if args.json:
        print_json(outcome)
    else:
        say(outcome.get("detail") or f"{args.command} {args.name}: {outcome['status']}")
    return EXIT_OK


def cmd_logs(admin: AdminClient, args: argparse.Namespace) -> int:
    after = args.after
    try:
        while True:
            events = admin.call("logs", name=args.name, after_id=after, limit=args.limit)
            for event in events:
                if args.json:
                    print_json(event, indent=None)
                else:
                    say("\n".join(render_event(event)))
            if events:
                after = events[-1]["id"]
            if not args.json and not events and not args.follow and after == args.after:
                say(f"no events for {args.name}" + (f" after #{after}" if after else ""))
            sys.stdout.flush()
            if not args.follow:
                return EXIT_OK
            # A full page means more is waiting: fetch it without pausing.
            if len(events) < args.limit:
                time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_urls(admin: AdminClient, args: argparse.Namespace) -> int:
    urls = admin.call("urls")
    if args.json:
        print_json(urls)
    else:
        say(urls_text(urls))
    return EXIT_OK


def add_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    load: Callable[[], HiveSettings],
) -> None:
    def add(name: str, handler: Handler, summary: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, help=summary)
        parser.add_argument("--json", action="store_true", help="print the raw result as JSON")
        parser.set_defaults(func=lambda a: _run(load, handler, a))
        return parser

    add("status", cmd_status, "agents, pending approvals and where everything is")
    add("list", cmd_list, "the agents table")

    approvals = add("approvals", cmd_approvals, "list approvals, pending first")
    approvals.add_argument("--pending", action="store_true", help="only the pending ones")

    for verb in ("approve", "deny"):
        p = add(verb, cmd_decide, f"{verb} a pending approval (sends `decide`)")
        p.add_argument("id", type=int, help="approval number (see `hive approvals`)")
        p.add_argument("--note", default="", help="a note for the requester")
        p.add_argument("--by", default="", help="who decides (default: your user name)")

    send = add("send", cmd_send, "send an agent a message, as the operator")
    send.add_argument("name", help="the recipient")
    send.add_argument("text", help="the message; - reads it from stdin")

    spawn = add(
        "spawn", cmd_spawn, "request a new agent, or bring back a destroyed one (needs an approval)"
    )
    spawn.add_argument("name")
    spawn.add_argument("--purpose", required=True, help="what the agent is for")
    spawn.add_argument(
        "--fresh",
        action="store_true",
        help="re-spawning a destroyed agent: discard its config repos, undelivered messages and "
        "claude conversation (credentials and work dir are kept)",
    )

    for verb, text in (
        ("kill", "stop an agent's turn loop and container (messages are kept)"),
        ("stop", "the same as kill"),
        ("destroy", "kill and remove the container (repos and history are kept)"),
        ("start", "start a stopped agent"),
        ("restart", "stop and start an agent"),
    ):
        p = add(verb, cmd_control, text)
        p.add_argument("name")
        if verb == "destroy":
            p.add_argument("--yes", action="store_true", help="confirm")

    logs = add("logs", cmd_logs, "an agent's turn events, rendered (or raw with --json)")
    logs.add_argument("name")
    logs.add_argument("--after", type=int, default=0, metavar="ID", help="events after this id")
    logs.add_argument("--limit", type=int, default=200, metavar="N", help="at most N (≤ 1000)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new events")

    add("urls", cmd_urls, "the dashboard, Temporal UI, metrics and agent page URLs")

    login = add(
        "login",
        cmd_login,
        "store an agent's own credentials (read from stdin, or prompted for without echo)",
    )
    login.add_argument("name", help="the agent")
    login.add_argument(
        "--kind",
        choices=list(LOGIN_KINDS),
        type=lambda s: s.replace("_", "-"),
        help="what the credential is (default: told from its shape)",
    )
