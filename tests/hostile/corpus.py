"""The corpus of bad inputs: each one, sent to the surface that takes it, must get a clear coded
error and change nothing (store, config repos, workflows).

A `Bad` names its group (names, sizes, unicode, shas, paths, json), the surface it is sent to,
the arguments, and what the refusal must look like: the error `code` (or HTTP status and code),
and words its message must contain so that a person reading it learns what was wrong.

Surfaces (tests/hostile/test_bad_inputs.py runs them):

- `send`: `Broker.send(sender, to, body)`; `recv`: `Broker.recv(agent, wait)`;
  `status`: `Broker.set_status(agent, text)` — code = BrokerError.code
- `http`: the dashboard app (`api.app.create_app`) with the CSRF header — `status` and the
  JSON `error` code, with a message and a hint (FastAPI's 422 for a JSON object of the wrong
  shape carries `detail` naming the field instead — code "validation" here — and, on
  POST /api/messages, without echoing the `input`). POST /api/messages parses its body with
  `hyperhive.strict_json.loads_strict`: text that is not usable JSON answers 422 `bad_json`.
- `mcp`: a tool of alice's or hm1nd's MCP server — an `is_error` result
- `spawn`, `apply`, `kill`, `decide`: `Lifecycle` requests — LifecycleError
- `operator`: `OperatorService` methods (spawn, decide, login) — OperatorError/CredentialError
- `commit`: `config_repo.apply_commit` of a crafted proposed commit; `resolve`:
  `config_repo.resolve_sha` — RepoError.code
- `admin`: `hyperhive.admin_protocol.parse_request(line)` — ProtocolError.code

`xfail` marks a product bug still open (strict: the test turns red once it is fixed, and the
mark is removed). The ones this corpus found and that are now fixed stay as plain cases, so they
cannot come back: names and shas with a trailing newline (`$` → `\\Z`); on POST /api/messages,
duplicate keys (were 201, the last key won) and NaN, 1e999 or non-UTF-8 bytes (were 500); a
purpose over 4000 characters from hm1nd's request_spawn (started a workflow); and unapplicable
commits given to request_apply_commit (started a workflow instead of being refused at once).

Placeholders in arguments, filled in by the test from the world it builds: `{head}` (the
proposed repo's HEAD commit of alice), `{tree}` / `{blob}` (a tree and a blob of that commit,
objects that are not commits).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# The world the corpus runs against (tests/hostile/conftest.py builds it).
AGENTS = ("alice", "bob", "hm1nd")
MAX_BODY_BYTES = 100
RECV_MAX_WAIT_S = 0.5


@dataclass(frozen=True)
class Bad:
    group: str
    surface: str
    name: str
    args: dict[str, Any]
    code: str = ""
    says: tuple[str, ...] = ()
    status: int = 0
    xfail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.group}-{self.surface}-{self.name}"


# -- names ----------------------------------------------------------------------------------------

# (label, name, what the message says about it)
BAD_NAMES: list[tuple[str, str, str]] = [
    ("empty", "", "empty"),
    ("too-long", "abcdefghij", "at most 9"),
    ("far-too-long", "a" * 300, "at most 9"),
    ("uppercase", "Alice", "lowercase"),
    ("all-caps", "ALICE", "lowercase"),
    ("inner-space", "al ice", "lowercase"),
    ("leading-space", " alice", "lowercase"),
    ("trailing-space", "alice ", "lowercase"),
    ("trailing-newline", "alice\n", "lowercase"),  # `$` would match before it; `\Z` does not
    ("tab", "al\tice", "lowercase"),
    ("cyrillic-a", "\u0430lice", "lowercase"),
    ("fullwidth", "\uff41lice", "lowercase"),
    ("dotless-i", "al\u0131ce", "lowercase"),
    ("zero-width-space", "ali\u200bce", "lowercase"),
    ("zero-width-joiner", "alice\u200d", "lowercase"),
    ("rtl-override", "\u202ealice", "lowercase"),
    ("combining-accent", "alice\u0301", "lowercase"),
    ("nul", "alice\x00", "lowercase"),
    ("traversal", "../x", "lowercase"),
    ("dotdot", "..", "lowercase"),
    ("dot", ".", "lowercase"),
    ("slash", "a/b", "lowercase"),
    ("backslash", "a\\b", "lowercase"),
    ("absolute", "/etc/x", "lowercase"),
    ("leading-dash", "-alice", "lowercase"),
    ("leading-digit", "9lives", "lowercase"),
    ("underscore", "al_ice", "lowercase"),
    ("dotted", "al.ice", "lowercase"),
    ("shell", "$(id)", "lowercase"),
    ("glob", "*", "lowercase"),
    ("url-escaped", "%2e%2e", "lowercase"),
    ("reserved-c0re", "hive-c0re", "reserved"),
]

# Syntactically fine, but no such agent.
UNKNOWN_NAMES = ["nobody", "h-alice", "zz9"]


def _name_cases() -> Iterator[Bad]:
    for label, name, says in BAD_NAMES:
        yield Bad(
            "names",
            "send",
            f"to-{label}",
            {"to": name},
            "invalid_name",
            ("recipient", says),
        )
        yield Bad("names", "spawn", label, {"name": name, "purpose": "x"}, says=(says,))
        yield Bad(
            "names",
            "http",
            f"send-to-{label}",
            {"method": "POST", "path": "/api/messages", "json": {"to": name, "body": "hi"}},
            "invalid_name",
            ("recipient", says),
            status=400,
        )
    for label, name, says in BAD_NAMES[::3]:
        yield Bad(
            "names", "send", f"from-{label}", {"sender": name}, "invalid_name", ("sender", says)
        )
        yield Bad("names", "recv", f"as-{label}", {"agent": name}, "invalid_name", ("agent", says))
        yield Bad(
            "names", "mcp", f"send-to-{label}", {"tool": "send", "to": name}, says=("recipient",)
        )
        yield Bad(
            "names",
            "mcp",
            f"spawn-{label}",
            {"agent": "hm1nd", "tool": "request_spawn", "name": name},
            says=(says,),
        )
    for name in UNKNOWN_NAMES:
        yield Bad("names", "send", f"to-unknown-{name}", {"to": name}, "unknown_agent", (name,))
        yield Bad("names", "recv", f"unknown-{name}", {"agent": name}, "unknown_agent", (name,))
        yield Bad("names", "kill", f"unknown-{name}", {"name": name}, says=(name, "no agent"))
        yield Bad(
            "names",
            "apply",
            f"unknown-{name}",
            {"name": name, "sha": "{head}"},
            says=(name, "no agent"),
        )
        yield Bad(
            "names",
            "http",
            f"send-to-unknown-{name}",
            {"method": "POST", "path": "/api/messages", "json": {"to": name, "body": "hi"}},
            "unknown_agent",
            (name,),
            status=404,
        )
    # Reserved or taken names cannot be spawned.
    for name, says in (("operator", "reserved"), ("hm1nd", "already exists")):
        yield Bad("names", "spawn", f"taken-{name}", {"name": name, "purpose": "x"}, says=(says,))
    yield Bad("names", "spawn", "taken-alice", {"name": "alice", "purpose": "x"}, says=("exists",))
    yield Bad(
        "names", "kill", "manager-kills-itself", {"name": "hm1nd", "by": "hm1nd"}, says=("hm1nd",)
    )
    for label, name, says in BAD_NAMES[::4]:
        syntax = name == "" or len(name) > 64 or "\x00" in name
        for cmd, fields in (("spawn", {"purpose": "x"}), ("send", {"body": "hi"})):
            key = "to" if cmd == "send" else "name"
            yield Bad(
                "names",
                "admin",
                f"{cmd}-{label}",
                {"obj": {"version": 1, "cmd": cmd, key: name, **fields}},
                "bad_request" if syntax else "refused",
                () if syntax else (says,),
            )
    for cmd in ("kill", "stop", "start", "restart", "logs"):
        yield Bad(
            "names",
            "admin",
            f"{cmd}-unknown",
            {"obj": {"version": 1, "cmd": cmd, "name": "nobody"}},
            "refused",
            ("nobody",),
        )
    yield Bad(
        "names",
        "admin",
        "destroy-unconfirmed",
        {"obj": {"version": 1, "cmd": "destroy", "name": "alice"}},
        "refused",
        ("destroy", "alice"),
    )
    yield Bad(
        "names",
        "admin",
        "approve-unknown",
        {"obj": {"version": 1, "cmd": "approve", "id": 424242}},
        "refused",
        ("424242",),
    )
    # The dashboard's and the agent pages' JSON endpoints.
    for label, path in (
        ("agent-unknown", "/api/agents/nobody/stop"),
        ("agent-uppercase", "/api/agents/Alice/start"),
        ("agent-encoded-traversal", "/api/agents/..%2Fbob/kill"),
        ("agent-nul", "/api/agents/alice%00/stop"),
        ("agent-rtl", "/api/agents/%E2%80%AEalice/restart"),
        ("action-unknown", "/api/agents/alice/explode"),
        ("action-uppercase", "/api/agents/alice/STOP"),
        ("destroy-unconfirmed", "/api/agents/alice/destroy"),
        ("approve-unknown", "/api/approvals/424242/approve"),
        ("deny-unknown", "/api/approvals/424242/deny"),
        ("approve-negative", "/api/approvals/-1/approve"),
        ("page-send-unknown", "/agents/nobody/api/send"),
        ("page-send-traversal", "/agents/..%2Fbob/api/send"),
        ("page-login-unknown", "/agents/nobody/api/login"),
        ("page-pause-unknown", "/agents/nobody/api/pause"),
    ):
        yield Bad(
            "names",
            "http",
            label,
            {"method": "POST", "path": path, "json": {"body": "hi"}},
            status=-4,
        )
    for label, path in (
        ("approve-word", "/api/approvals/abc/approve"),
        ("approve-float", "/api/approvals/1.5/deny"),
        # Past SQLite's 64-bit ids: was a 500 (OverflowError).
        ("approve-2-63", f"/api/approvals/{2**63}/approve"),
        ("deny-huge", f"/api/approvals/{10**30}/deny"),
    ):
        yield Bad(
            "names",
            "http",
            label,
            {"method": "POST", "path": path},
            "validation",
            ("approval_id",),
            status=422,
        )
    yield Bad("names", "status", "operator", {"agent": "operator"}, "invalid_name", ("operator",))
    yield Bad("names", "status", "unknown", {"agent": "nobody"}, "unknown_agent", ("nobody",))


# -- sizes ----------------------------------------------------------------------------------------


def _size_cases() -> Iterator[Bad]:
    over = MAX_BODY_BYTES + 1
    bodies = {
        "ascii-max-plus-1": "a" * over,
        "two-byte-max-plus-1": "é" * (MAX_BODY_BYTES // 2) + "a",  # 51 chars, 101 bytes
        "three-byte-max-plus-1": "€" * (MAX_BODY_BYTES // 3) + "ab",  # 35 chars, 101 bytes
        "four-byte-max-plus-1": "🐝" * (MAX_BODY_BYTES // 4) + "a",  # 26 chars, 101 bytes
        "huge": "x" * 100_000,
    }
    for label, body in bodies.items():
        size = str(len(body.encode()))
        yield Bad("sizes", "send", label, {"body": body}, "body_too_large", (size, "limit"))
        yield Bad(
            "sizes",
            "http",
            f"send-{label}",
            {"method": "POST", "path": "/api/messages", "json": {"to": "alice", "body": body}},
            "body_too_large",
            (str(MAX_BODY_BYTES),),
            status=413,
        )
        yield Bad("sizes", "mcp", f"send-{label}", {"tool": "send", "body": body}, says=(size,))
    # Far over what any send request can be: refused before it is parsed.
    yield Bad(
        "sizes",
        "http",
        "send-request-far-too-large",
        {
            "method": "POST",
            "path": "/api/messages",
            "content": b'{"to":"alice","body":"' + b"x" * 700_000 + b'"}',
        },
        "body_too_large",
        ("far larger",),
        status=413,
    )
    for label, body in (
        ("empty", ""),
        ("spaces", "   "),
        ("newlines", "\n\n\t"),
        ("ideographic-space", "\u3000"),
    ):
        yield Bad("sizes", "send", f"body-{label}", {"body": body}, "empty_body", ("empty",))
        yield Bad(
            "sizes",
            "http",
            f"send-body-{label}",
            {"method": "POST", "path": "/api/messages", "json": {"to": "alice", "body": body}},
            "empty_body",
            ("empty",),
            status=400,
        )
    yield Bad("sizes", "mcp", "send-empty", {"tool": "send", "body": ""}, says=("empty",))
    waits: dict[str, Any] = {
        "negative": -1,
        "tiny-negative": -1e-9,
        "over-limit": RECV_MAX_WAIT_S + 1,
        "huge": 1e308,
        "nan": float("nan"),
        "inf": float("inf"),
        "minus-inf": float("-inf"),
        "bool": True,
        "string": "5",
        "none": None,
    }
    for label, wait in waits.items():
        yield Bad(
            "sizes", "recv", f"wait-{label}", {"wait": wait}, "invalid_wait", ("wait_seconds",)
        )
    for label, raw in (
        ("negative", "-1"),
        ("huge", "1e308"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("minus-inf", "-inf"),
        ("over-limit", str(RECV_MAX_WAIT_S + 1)),
    ):
        yield Bad(
            "sizes",
            "http",
            f"operator-recv-wait-{label}",
            {"method": "POST", "path": "/api/operator/recv", "params": {"wait_seconds": raw}},
            "invalid_wait",
            ("wait_seconds",),
            status=400,
        )
    for label, raw in (("word", "soon"), ("empty", ""), ("hex", "0x10")):
        yield Bad(
            "sizes",
            "http",
            f"operator-recv-wait-{label}",
            {"method": "POST", "path": "/api/operator/recv", "params": {"wait_seconds": raw}},
            "validation",
            ("wait_seconds",),
            status=422,
        )
    for label, wait in (("negative", -1), ("string", "soon"), ("array", [1])):
        yield Bad(
            "sizes",
            "mcp",
            f"recv-wait-{label}",
            {"tool": "recv", "wait_seconds": wait},
            says=("wait_seconds",),
        )
    for label, limit in (("zero", "0"), ("negative", "-5"), ("over", "1001"), ("huge", "9" * 40)):
        yield Bad(
            "sizes",
            "http",
            f"list-limit-{label}",
            {"method": "GET", "path": "/api/messages", "params": {"limit": limit}},
            "validation",
            ("limit",),
            status=422,
        )
    yield Bad(
        "sizes",
        "http",
        "list-agent-too-long",
        {"method": "GET", "path": "/api/messages", "params": {"agent": "a" * 65}},
        "validation",
        ("agent",),
        status=422,
    )
    yield Bad(
        "sizes", "status", "too-long", {"text": "s" * 1001}, "invalid_status", ("1001", "1000")
    )
    yield Bad(
        "sizes",
        "mcp",
        "status-too-long",
        {"tool": "set_status", "text": "s" * 1001},
        says=("1001",),
    )
    yield Bad(
        "sizes",
        "operator",
        "spawn-purpose-too-long",
        {"op": "spawn", "name": "newbie", "purpose": "p" * 4001},
        says=("4000",),
    )
    yield Bad(
        "sizes",
        "mcp",
        "spawn-purpose-too-long",
        {"agent": "hm1nd", "tool": "request_spawn", "name": "newbie", "purpose": "p" * 4001},
        says=("4000",),
    )
    # Lifecycle.request_spawn itself holds the limit, so every way in (the manager's tool, the
    # dashboard, OperatorService.spawn, the admin protocol) refuses the same purpose.
    yield Bad(
        "sizes",
        "spawn",
        "purpose-too-long",
        {"name": "newbie", "purpose": "p" * 4001},
        says=("purpose", "4000"),
    )
    for label, by in (
        ("crlf", "root\r\nApproved-By: ceo"),
        ("bidi", "ops\u202e"),
        ("long", "b" * 65),
    ):
        yield Bad(
            "sizes",
            "operator",
            f"decide-by-{label}",
            {"op": "decide", "id": 1, "by": by},
            says=("who decided",),
        )
    yield Bad(
        "sizes",
        "operator",
        "decide-note-too-long",
        {"op": "decide", "id": 1, "note": "n" * 2001},
        says=("2000",),
    )
    for label, purpose in (("empty", ""), ("blank", " \n\t ")):
        yield Bad(
            "sizes",
            "spawn",
            f"purpose-{label}",
            {"name": "newbie", "purpose": purpose},
            says=("purpose",),
        )
    yield Bad(
        "sizes",
        "operator",
        "login-secret-too-long",
        {"op": "login", "name": "alice", "kind": "api_key", "secret": "sk-ant-" + "k" * 17000},
        says=("16384",),
    )
    yield Bad(
        "sizes",
        "commit",
        "config-over-128kib",
        {"tree": {"agent.nix": "x" * ((128 << 10) + 1)}},
        "too_large",
        ("agent.nix", "bytes"),
    )
    # Was 403 "no valid CSRF token": the body is refused for its size, whatever it holds.
    yield Bad(
        "sizes",
        "http",
        "form-over-1mib",
        {"method": "POST", "path": "/api/approvals/1/approve", "form": b"note=" + b"x" * (2 << 20)},
        "body_too_large",
        ("bytes",),
        status=413,
    )
    # A description is carried in the apply workflow's input and shown in the approval: 1.5 MiB
    # used to fail ApplyCommitWorkflow forever on Temporal's payload limit.
    for surface, args in (
        ("apply", {"name": "alice", "sha": "{head}", "description": "d" * 2001}),
        ("mcp", {"agent": "hm1nd", "tool": "request_apply_commit", "description": "d" * 2001}),
    ):
        yield Bad("sizes", surface, f"{surface}-description-too-long", args, says=("2000",))
    yield Bad(
        "sizes",
        "admin",
        "line-over-1mib",
        {"line": b'{"version":1,"cmd":"send","to":"alice","body":"' + b"x" * (1 << 20) + b'"}'},
        "line_too_long",
        ("longer than",),
    )
    for label, value in (("zero", 0), ("negative", -3), ("over-int64", 2**63)):
        yield Bad(
            "sizes",
            "admin",
            f"approve-id-{label}",
            {"obj": {"version": 1, "cmd": "approve", "id": value}},
            "bad_request",
            ("id",),
        )
    for label, obj in (
        ("logs-limit-zero", {"cmd": "logs", "name": "alice", "limit": 0}),
        ("logs-limit-over", {"cmd": "logs", "name": "alice", "limit": 1001}),
        ("logs-after-negative", {"cmd": "logs", "name": "alice", "after_id": -1}),
        ("note-too-long", {"cmd": "approve", "id": 1, "note": "n" * 2001}),
        ("purpose-too-long", {"cmd": "spawn", "name": "bob", "purpose": "p" * 4001}),
        ("name-too-long", {"cmd": "kill", "name": "k" * 65}),
        ("name-empty", {"cmd": "kill", "name": ""}),
        ("by-too-long", {"cmd": "stop", "name": "alice", "by": "b" * 65}),
        # Recorded as who decided: one printable line, or a forged header lands in the record.
        ("by-crlf", {"cmd": "approve", "id": 1, "by": "root\r\nApproved-By: ceo"}),
        ("by-escape", {"cmd": "deny", "id": 1, "by": "ops\x1b[2J"}),
        ("request-id-too-long", {"cmd": "status", "request_id": "r" * 129}),
    ):
        yield Bad("sizes", "admin", label, {"obj": {"version": 1, **obj}}, "bad_request", ())


# -- unicode --------------------------------------------------------------------------------------


def _unicode_cases() -> Iterator[Bad]:
    bodies = {
        "lone-high-surrogate": "hi \ud800 there",
        "lone-low-surrogate": "\udfff",
        "reversed-pair": "\udc00\ud800",
        "nul": "a\x00b",
        "only-nul": "\x00",
    }
    for label, body in bodies.items():
        says = ("nul",) if "nul" in label else ("surrogate",)
        yield Bad("unicode", "send", f"body-{label}", {"body": body}, "invalid_body", says)
        yield Bad("unicode", "mcp", f"send-{label}", {"tool": "send", "body": body}, says=says)
    for label, text in (("nul", "work\x00ing"),):
        yield Bad(
            "unicode", "status", f"status-{label}", {"text": text}, "invalid_status", ("nul",)
        )
    # Shown to the operator's terminal and stored: no NUL, no escape sequences.
    for label, text in (("nul", "be\x00good"), ("escape", "be \x1b[2Jgood")):
        yield Bad(
            "unicode",
            "mcp",
            f"request-spawn-purpose-{label}",
            {"agent": "hm1nd", "tool": "request_spawn", "purpose": text},
            says=("control character",),
        )
        yield Bad(
            "unicode",
            "mcp",
            f"request-apply-description-{label}",
            {"agent": "hm1nd", "tool": "request_apply_commit", "description": text},
            says=("control character",),
        )
    # Escaped in JSON: valid JSON text, so the broker refuses the body it decodes to.
    for label, raw, said in (
        ("lone-surrogate-escape", rb'{"to":"alice","body":"\ud800"}', "surrogate"),
        ("nul-escape", rb'{"to":"alice","body":"a\u0000b"}', "nul"),
    ):
        yield Bad(
            "unicode",
            "http",
            f"send-{label}",
            {"method": "POST", "path": "/api/messages", "content": raw},
            "invalid_body",
            (said,),
            status=400,
        )
    # Bytes that are not UTF-8: not JSON at all (RFC 8259 §8.1), refused before parsing.
    for label, raw in (
        ("invalid-utf8", b'{"to":"alice","body":"\xff\xfe"}'),
        ("overlong-utf8", b'{"to":"alice","body":"\xc0\xaf"}'),
        ("utf16-bom", '{"to":"alice","body":"x"}'.encode("utf-16")),
        ("latin1", '{"to":"alice","body":"caf\xe9"}'.encode("latin-1")),
        ("cesu-surrogate", b'{"to":"alice","body":"\xed\xa0\x80"}'),
    ):
        yield Bad(
            "unicode",
            "http",
            f"send-{label}",
            {"method": "POST", "path": "/api/messages", "content": raw},
            "bad_json",
            ("not usable json", "utf-8"),
            status=422,
        )
    for label, line in (
        ("invalid-utf8", b'{"version":1,"cmd":"status","x":"\xff"}'),
        ("latin1", '{"version":1,"cmd":"send","to":"alice","body":"caf\xe9"}'.encode("latin-1")),
        ("utf16", '{"version":1,"cmd":"status"}'.encode("utf-16")),
    ):
        yield Bad("unicode", "admin", label, {"line": line}, "bad_json", ("utf-8",))
    for label, escaped in (
        ("lone-surrogate", r"\ud800"),
        ("low-surrogate", r"\udfff"),
        ("nul", r"\u0000"),
    ):
        line = ('{"version":1,"cmd":"send","to":"alice","body":"x' + escaped + '"}').encode()
        yield Bad("unicode", "admin", f"send-{label}", {"line": line}, "bad_request", ("body",))
    # Look-alike command names are not commands.
    for label, cmd in (
        ("cyrillic", "st\u0430tus"),
        ("fullwidth", "\uff53tatus"),
        ("zero-width", "sta\u200btus"),
        ("rtl", "\u202estatus"),
        ("uppercase", "STATUS"),
        ("padded", " status"),
    ):
        yield Bad(
            "unicode",
            "admin",
            f"cmd-{label}",
            {"obj": {"version": 1, "cmd": cmd}},
            "unknown_command",
            ("no command",),
        )
    yield Bad(
        "unicode",
        "operator",
        "login-token-non-ascii",
        {"op": "login", "name": "alice", "kind": "oauth_token", "secret": "sk-ant-oat\u200b01"},
        says=("non-ascii",),
    )


# -- shas -----------------------------------------------------------------------------------------

# (label, sha, code, words)
BAD_SHAS: list[tuple[str, str, str, str]] = [
    ("empty", "", "bad_sha", "hex"),
    ("three", "abc", "bad_sha", "hex"),
    ("six", "abcdef", "bad_sha", "hex"),
    ("non-hex", "zzzzzzz", "bad_sha", "hex"),
    ("g40", "g" * 40, "bad_sha", "hex"),
    ("forty-one", "a" * 41, "bad_sha", "hex"),
    ("head", "HEAD", "bad_sha", "hex"),
    ("branch", "main", "bad_sha", "hex"),
    ("head-parent", "HEAD~1", "bad_sha", "hex"),
    ("option", "--all", "bad_sha", "hex"),
    ("short-option", "-n", "bad_sha", "hex"),
    ("trailing-space", "abc1234 ", "bad_sha", "hex"),
    ("leading-space", " abc1234", "bad_sha", "hex"),
    ("newline", "abc1234\n", "bad_sha", "hex"),  # `$` would match before it; `\Z` does not
    ("full-newline", "a" * 40 + "\n", "bad_sha", "hex"),
    ("nul", "abc1234\x00", "bad_sha", "hex"),
    ("fullwidth", "\uff41bc1234", "bad_sha", "hex"),
    ("peel", "abc1234^{tree}", "bad_sha", "hex"),
    ("reflog", "@{-1}", "bad_sha", "hex"),
    ("range", "abc1234..def5678", "bad_sha", "hex"),
    ("zero-width", "abc\u200b1234", "bad_sha", "hex"),
    ("unknown-full", "0" * 40, "unknown_sha", "no commit"),
    ("unknown-short", "deadbeef", "unknown_sha", "no commit"),
    ("a-tree", "{tree}", "unknown_sha", "no commit"),
    ("a-blob", "{blob}", "unknown_sha", "no commit"),
]


def _sha_cases() -> Iterator[Bad]:
    for label, sha, code, says in BAD_SHAS:
        yield Bad("shas", "resolve", label, {"sha": sha}, code, (says,))
        yield Bad("shas", "apply", label, {"name": "alice", "sha": sha}, says=(says,))
    for label, sha, _, says in BAD_SHAS[::2]:
        yield Bad(
            "shas",
            "mcp",
            f"apply-{label}",
            {"agent": "hm1nd", "tool": "request_apply_commit", "name": "alice", "sha": sha},
            says=(says,),
        )
    wrong_types: tuple[tuple[str, Any], ...] = (
        ("int", 1234567),
        ("null", None),
        ("list", ["abc1234"]),
    )
    for label, wrong in wrong_types:
        yield Bad(
            "shas",
            "mcp",
            f"apply-{label}",
            {"agent": "hm1nd", "tool": "request_apply_commit", "name": "alice", "sha": wrong},
            says=("sha",),
        )


# -- paths ----------------------------------------------------------------------------------------


def _path_cases() -> Iterator[Bad]:
    # Commit trees: (label, tree spec, code, words). A spec maps a name to file text, or to
    # ("symlink", target) / ("dir",) / ("submodule",); the config files are filled in with
    # valid content unless the spec names them.
    trees: list[tuple[str, dict[str, Any], str, str]] = [
        (
            "symlink-agent-nix-to-passwd",
            {"agent.nix": ("symlink", "/etc/passwd")},
            "symlink",
            "symlink",
        ),
        (
            "symlink-claude-md-to-shadow",
            {"CLAUDE.md": ("symlink", "/etc/shadow")},
            "symlink",
            "symlink",
        ),
        (
            "symlink-to-other-agent",
            {"agent.nix": ("symlink", "../bob/agent.nix")},
            "symlink",
            "symlink",
        ),
        (
            "symlink-to-applied",
            {"CLAUDE.md": ("symlink", "../../applied/alice/CLAUDE.md")},
            "symlink",
            "symlink",
        ),
        ("extra-symlink", {"passwd": ("symlink", "/etc/passwd")}, "symlink", "symlink"),
        ("dotdot-entry", {"..": "x"}, "path_outside", "outside"),
        ("dot-entry", {".": "x"}, "path_outside", "outside"),
        ("dotgit-entry", {".git": "x"}, "path_outside", "outside"),
        ("dotgit-upper", {".GIT": "x"}, "path_outside", "outside"),
        ("slash-in-name", {"../etc/passwd": "x"}, "path_outside", "outside"),
        ("absolute-name", {"/etc/passwd": "x"}, "path_outside", "outside"),
        ("backslash-name", {"..\\agent.nix": "x"}, "path_outside", "outside"),
        ("control-char-name", {"agent.nix\x01": "x"}, "path_outside", "outside"),
        ("newline-name", {"agent.nix\n": "x"}, "path_outside", "outside"),
        ("subdir", {"etc": ("dir",)}, "not_config_only", "directory"),
        ("config-as-dir", {"agent.nix": ("dir",)}, "not_config_only", "directory"),
        ("submodule", {"vendor": ("submodule",)}, "not_config_only", "submodule"),
        ("extra-file", {"README.md": "hi"}, "not_config_only", "not a config file"),
        ("another-agents-file", {"bob": "x"}, "not_config_only", "another agent"),
        (
            "gitattributes",
            {".gitattributes": "* filter=evil"},
            "not_config_only",
            "not a config file",
        ),
        ("gitmodules", {".gitmodules": "[submodule]"}, "not_config_only", "not a config file"),
        ("flake-nix", {"flake.nix": "{ }"}, "not_config_only", "not a config file"),
        ("device-dev-null", {"dev-null": ("symlink", "/dev/null")}, "symlink", "symlink"),
        ("device-name-con", {"CON": "x"}, "not_config_only", "not a config file"),
        ("device-name-nul", {"NUL": "x"}, "not_config_only", "not a config file"),
        ("case-variant", {"AGENT.NIX": "x"}, "not_config_only", "not a config file"),
        ("trailing-space", {"agent.nix ": "x"}, "not_config_only", "not a config file"),
        ("cyrillic-lookalike", {"\u0430gent.nix": "x"}, "not_config_only", "not a config file"),
        ("zero-width-lookalike", {"agent.nix\u200b": "x"}, "not_config_only", "not a config file"),
        ("missing-claude-md", {"CLAUDE.md": None}, "missing_config", "missing"),
        ("missing-both", {"CLAUDE.md": None, "agent.nix": None}, "missing_config", "missing"),
        ("binary-config", {"CLAUDE.md": b"\xff\xfe\x00bin"}, "not_text", "utf-8"),
    ]
    for label, tree, code, says in trees:
        yield Bad("paths", "commit", label, {"tree": tree}, code, (says,))
    # Every tree through the manager's request: Lifecycle.request_apply_commit validates the
    # commit first, so it is refused at once with the same words and no workflow starts.
    for label, tree, _, says in trees:
        yield Bad("paths", "apply", f"tree-{label}", {"name": "alice", "tree": tree}, says=(says,))
    # Repos that are not where they should be (symlinked away): carol's proposed repo is a
    # symlink to another directory, dave's objects dir is.
    for agent in ("carol", "dave"):
        yield Bad(
            "paths",
            "resolve",
            f"symlinked-repo-{agent}",
            {"agent": agent, "sha": "abc1234"},
            "no_repo",
            ("symlink",),
        )
        yield Bad(
            "paths",
            "apply",
            f"symlinked-repo-{agent}",
            {"name": agent, "sha": "abc1234"},
            says=("symlink",),
        )
    # Login for a path instead of an agent: nothing is written anywhere.
    for label, name in (("traversal", "../bob"), ("absolute", "/etc"), ("dotdot", "..")):
        yield Bad(
            "paths",
            "operator",
            f"login-{label}",
            {"op": "login", "name": name, "kind": "api_key", "secret": "sk-ant-api-x"},
            says=("no agent",),
        )
    # Static files: no escaping the static dir, however the path is spelt.
    for label, path in (
        ("encoded-dotdot", "/static/%2e%2e/app.py"),
        ("double-encoded", "/static/%252e%252e/app.py"),
        ("encoded-slash", "/static/..%2fapp.py"),
        ("backslash", "/static/..\\app.py"),
        ("absolute", "/static//etc/passwd"),
        ("nul", "/static/hive.css%00.py"),
    ):
        yield Bad(
            "paths", "http", f"static-{label}", {"method": "GET", "path": path}, "", (), status=404
        )


# -- JSON -----------------------------------------------------------------------------------------


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def _json_cases() -> Iterator[Bad]:
    send = {"method": "POST", "path": "/api/messages"}
    # (label, raw body, code, words, status). Text that is not usable JSON — unparsable, not
    # UTF-8, NaN/Infinity or a number out of range, duplicate keys, nested over 32 levels, not
    # an object — is refused by hyperhive.strict_json with our coded `bad_json` 422 body; a JSON
    # object of the wrong shape gets FastAPI's 422 `detail` naming the field ("validation").
    bad = "not usable json"
    not_object = "not a json object"
    nested = ("nested", "32")
    bodies: list[tuple[str, bytes, str, tuple[str, ...], int]] = [
        ("array", b"[]", "bad_json", ("an array", not_object), 422),
        ("array-of-object", b'[{"to":"alice","body":"hi"}]', "bad_json", (not_object,), 422),
        ("string", b'"hello"', "bad_json", (not_object,), 422),
        ("number", b"42", "bad_json", (not_object,), 422),
        ("null", b"null", "bad_json", ("null", not_object), 422),
        ("true", b"true", "bad_json", (not_object,), 422),
        ("empty", b"", "bad_json", (bad,), 422),
        ("whitespace", b" \r\n\t", "bad_json", (bad,), 422),
        ("not-json", b"to=alice&body=hi", "bad_json", (bad,), 422),
        ("truncated", b'{"to":"alice","body":"hi"', "bad_json", (bad, "delimiter"), 422),
        ("trailing-comma", b'{"to":"alice","body":"hi",}', "bad_json", (bad,), 422),
        ("single-quotes", b"{'to':'alice','body':'hi'}", "bad_json", (bad, "double quotes"), 422),
        ("comment", b'{"to":"alice", /* c */ "body":"hi"}', "bad_json", (bad,), 422),
        ("trailing-data", b'{"to":"alice","body":"hi"} {}', "bad_json", (bad, "extra data"), 422),
        ("nan-body", b'{"to":"alice","body":NaN}', "bad_json", (bad, "nan"), 422),
        ("to-infinity", b'{"to":-Infinity,"body":"hi"}', "bad_json", (bad, "infinity"), 422),
        ("body-huge-number", b'{"to":"alice","body":1e999}', "bad_json", ("out of range",), 422),
        ("body-huge-negative", b'{"to":"alice","body":-1e400}', "bad_json", ("out of range",), 422),
        (
            "duplicate-to",
            b'{"to":"alice","to":"bob","body":"hi"}',
            "bad_json",
            ("`to`", "twice"),
            422,
        ),
        (
            "duplicate-body",
            b'{"to":"alice","body":"hi","body":"bye"}',
            "bad_json",
            ("`body`", "twice"),
            422,
        ),
        ("to-number", b'{"to":1,"body":"hi"}', "validation", ("to",), 422),
        ("to-list", b'{"to":["alice"],"body":"hi"}', "validation", ("to",), 422),
        ("to-object", b'{"to":{"name":"alice"},"body":"hi"}', "validation", ("to",), 422),
        ("to-null", b'{"to":null,"body":"hi"}', "validation", ("to",), 422),
        ("body-number", b'{"to":"alice","body":1}', "validation", ("body",), 422),
        (
            "body-huge-int",
            b'{"to":"alice","body":' + b"9" * 4000 + b"}",
            "validation",
            ("body",),
            422,
        ),
        ("body-bool", b'{"to":"alice","body":true}', "validation", ("body",), 422),
        ("body-list", b'{"to":"alice","body":["hi"]}', "validation", ("body",), 422),
        ("missing-body", b'{"to":"alice"}', "validation", ("body",), 422),
        ("missing-to", b'{"body":"hi"}', "validation", ("to",), 422),
        ("extra-field", b'{"to":"alice","body":"hi","from":"bob"}', "validation", ("from",), 422),
        (
            "extra-sender",
            b'{"to":"alice","body":"hi","sender":"hm1nd"}',
            "validation",
            ("sender",),
            422,
        ),
        # Deep, but within the size a send request may have (6 × 100 + 4096 bytes).
        ("deep-array", _deep(2000), "bad_json", nested, 422),
        ("deep-object", b'{"a":' * 700 + b"1" + b"}" * 700, "bad_json", nested, 422),
        ("deep-in-body", b'{"to":"alice","body":' + _deep(2000) + b"}", "bad_json", nested, 422),
        ("deep-33", b'{"to":"alice","body":"hi","x":' + _deep(32) + b"}", "bad_json", nested, 422),
        # 32 levels is allowed: the parser takes it and the model refuses the extra field.
        (
            "deep-32",
            b'{"to":"alice","body":"hi","x":' + _deep(31) + b"}",
            "validation",
            ('"x"',),
            422,
        ),
        ("deep-array-huge", _deep(100_000), "body_too_large", ("far larger",), 413),
    ]
    for label, raw, code, says, status in bodies:
        yield Bad(
            "json", "http", f"send-{label}", {**send, "content": raw}, code, says, status=status
        )
    # The kind of value is named as JSON names it (RFC 8259: string, number, true/false).
    yield Bad(
        "json",
        "http",
        "send-string-named",
        {**send, "content": b'"hello"'},
        "bad_json",
        ("a string", not_object),
        status=422,
    )
    # The admin protocol: one JSON object per line.
    lines: list[tuple[str, bytes, str, str]] = [
        ("empty-line", b"\n", "bad_json", "empty"),
        ("blank-line", b"   \r\n", "bad_json", "empty"),
        ("not-json", b"status\n", "bad_json", "not valid json"),
        ("truncated", b'{"version":1,"cmd":"status"', "bad_json", "not valid json"),
        ("array", b'[{"version":1,"cmd":"status"}]', "bad_request", "not a json object"),
        ("string", b'"status"', "bad_request", "not a json object"),
        ("number", b"1", "bad_request", "not a json object"),
        ("null", b"null", "bad_request", "not a json object"),
        ("nan", b'{"version":1,"cmd":"logs","name":"alice","limit":NaN}', "bad_json", "nan"),
        ("infinity", b'{"version":1,"cmd":"status","x":Infinity}', "bad_json", "infinity"),
        ("huge-float", b'{"version":1,"cmd":"approve","id":1e400}', "bad_json", "out of range"),
        (
            "huge-int",
            b'{"version":1,"cmd":"approve","id":' + b"9" * 5000 + b"}",
            "bad_json",
            "not valid json",
        ),
        ("duplicate-cmd", b'{"version":1,"cmd":"status","cmd":"destroy"}', "bad_json", "twice"),
        ("duplicate-version", b'{"version":1,"version":2,"cmd":"status"}', "bad_json", "twice"),
        (
            "deep-array",
            b'{"version":1,"cmd":"status","x":' + _deep(100_000) + b"}",
            "bad_json",
            "nested",
        ),
        ("deep-33", b'{"version":1,"cmd":"status","x":' + _deep(33) + b"}", "bad_json", "nested"),
        ("no-version", b'{"cmd":"status"}', "unsupported_version", "version"),
        ("version-2", b'{"version":2,"cmd":"status"}', "unsupported_version", "version 2"),
        ("version-0", b'{"version":0,"cmd":"status"}', "unsupported_version", "version 0"),
        ("version-string", b'{"version":"1","cmd":"status"}', "unsupported_version", "integer"),
        ("version-bool", b'{"version":true,"cmd":"status"}', "unsupported_version", "integer"),
        ("version-float", b'{"version":1.0,"cmd":"status"}', "unsupported_version", "integer"),
        ("version-null", b'{"version":null,"cmd":"status"}', "unsupported_version", "integer"),
        ("no-cmd", b'{"version":1}', "unknown_command", "no `cmd`"),
        ("cmd-number", b'{"version":1,"cmd":1}', "unknown_command", "string"),
        ("cmd-list", b'{"version":1,"cmd":["status"]}', "unknown_command", "string"),
        ("cmd-unknown", b'{"version":1,"cmd":"rm -rf"}', "unknown_command", "no command"),
        ("cmd-python-attr", b'{"version":1,"cmd":"__class__"}', "unknown_command", "no command"),
        (
            "extra-field",
            b'{"version":1,"cmd":"status","force":true}',
            "bad_request",
            "unknown field",
        ),
        ("approve-id-string", b'{"version":1,"cmd":"approve","id":"3"}', "bad_request", "integer"),
        ("approve-id-float", b'{"version":1,"cmd":"approve","id":3.0}', "bad_request", "integer"),
        ("approve-id-bool", b'{"version":1,"cmd":"approve","id":true}', "bad_request", "integer"),
        ("approve-no-id", b'{"version":1,"cmd":"approve"}', "bad_request", "missing"),
        (
            "send-body-null",
            b'{"version":1,"cmd":"send","to":"alice","body":null}',
            "bad_request",
            "string",
        ),
        (
            "send-to-number",
            b'{"version":1,"cmd":"send","to":7,"body":"x"}',
            "bad_request",
            "string",
        ),
        (
            "send-sender",
            b'{"version":1,"cmd":"send","to":"alice","body":"x","sender":"bob"}',
            "bad_request",
            "unknown field",
        ),
        (
            "destroy-confirm-string",
            b'{"version":1,"cmd":"destroy","name":"alice","confirm":"yes"}',
            "bad_request",
            "true or false",
        ),
        (
            "pending-only-int",
            b'{"version":1,"cmd":"approvals","pending_only":1}',
            "bad_request",
            "true or false",
        ),
        (
            "request-id-object",
            b'{"version":1,"cmd":"status","request_id":{}}',
            "bad_request",
            "request_id",
        ),
        (
            "request-id-bool",
            b'{"version":1,"cmd":"status","request_id":true}',
            "bad_request",
            "request_id",
        ),
    ]
    for label, line, code, said in lines:
        yield Bad("json", "admin", label, {"line": line}, code, (said,))
    for label, args in (
        ("send-extra-args-only", {"tool": "send", "to": None, "body": None}),
        ("send-to-object", {"tool": "send", "to": {"name": "bob"}}),
        ("send-body-list", {"tool": "send", "body": ["a", "b"]}),
        ("send-body-number", {"tool": "send", "body": 1e308}),
        ("status-null", {"tool": "set_status", "text": None}),
        ("status-object", {"tool": "set_status", "text": {"a": 1}}),
        ("unknown-tool", {"tool": "delete_everything"}),
        ("python-attr-tool", {"tool": "__init__"}),
    ):
        yield Bad("json", "mcp", label, args, says=())
    yield Bad(
        "json",
        "operator",
        "login-credentials-not-json",
        {"op": "login", "name": "alice", "kind": "credentials_json", "secret": "{not json"},
        says=("not json",),
    )
    yield Bad(
        "json",
        "operator",
        "login-credentials-array",
        {"op": "login", "name": "alice", "kind": "credentials_json", "secret": "[1, 2]"},
        says=("accesstoken",),
    )
    yield Bad(
        "json",
        "operator",
        "login-credentials-token-number",
        {
            "op": "login",
            "name": "alice",
            "kind": "credentials_json",
            "secret": json.dumps({"claudeAiOauth": {"accessToken": 1}}),
        },
        says=("accesstoken",),
    )
    yield Bad(
        "json",
        "decide",
        "unknown-approval",
        {"id": 424242},
        says=("no approval", "424242"),
    )


def build() -> list[Bad]:
    cases = [
        *_name_cases(),
        *_size_cases(),
        *_unicode_cases(),
        *_sha_cases(),
        *_path_cases(),
        *_json_cases(),
    ]
    ids = [c.id for c in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, duplicates
    return cases


CORPUS: list[Bad] = build()
GROUPS = ("names", "sizes", "unicode", "shas", "paths", "json")


def counts() -> dict[str, int]:
    return {g: sum(1 for c in CORPUS if c.group == g) for g in GROUPS}
