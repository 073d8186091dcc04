"""The admin protocol's parsing, pure: what a well-formed request becomes, and for each way a
line can be wrong, the error code and a message that says what was wrong."""

from __future__ import annotations

import json
import typing

import pytest

from hyperhive.admin_protocol import (
    COMMANDS,
    MAX_LINE_BYTES,
    PROTOCOL_VERSION,
    ApproveRequest,
    DestroyRequest,
    ErrorCode,
    LoginKind,
    LoginRequest,
    LogsRequest,
    ProtocolError,
    SendRequest,
    encode_response,
    error_response,
    ok_response,
    parse_request,
    parse_response,
    usage,
)
from hyperhive.credentials import CredentialKind


def line(**fields: object) -> bytes:
    return json.dumps({"version": 1, **fields}).encode() + b"\n"


def test_requests_become_typed_models():
    approve = parse_request(line(cmd="approve", id=3, note="ok", by="alice"))
    assert approve == ApproveRequest(id=3, note="ok", by="alice")
    send = parse_request(b'{"version":1,"cmd":"send","to":"alice","body":"hi"}')
    assert isinstance(send, SendRequest) and (send.to, send.body) == ("alice", "hi")
    logs = parse_request(line(cmd="logs", name="alice", after_id=0, limit=100))
    assert isinstance(logs, LogsRequest) and logs.limit == 100
    destroy = parse_request(line(cmd="destroy", name="alice"))
    assert isinstance(destroy, DestroyRequest) and destroy.confirm is False


def test_every_command_parses_from_its_own_example():
    for cmd, model in COMMANDS.items():
        parsed = parse_request(line(cmd=cmd, **model.example))
        assert isinstance(parsed, model), (cmd, parsed)


def test_request_id_is_kept_and_crlf_and_a_missing_newline_are_fine():
    parsed = parse_request(b'{"version":1,"cmd":"status","request_id":"abc"}\r\n')
    assert not isinstance(parsed, ProtocolError) and parsed.request_id == "abc"
    assert not isinstance(parse_request(b'{"version":1,"cmd":"urls"}'), ProtocolError)


def test_a_body_with_unicode_and_newlines_escaped_is_accepted():
    parsed = parse_request(line(cmd="send", to="alice", body="héllo\nwörld ◆ 🐝"))
    assert isinstance(parsed, SendRequest) and parsed.body == "héllo\nwörld ◆ 🐝"


BAD = ErrorCode.BAD_JSON
REQ = ErrorCode.BAD_REQUEST
CMD = ErrorCode.UNKNOWN_COMMAND
VER = ErrorCode.UNSUPPORTED_VERSION

MALFORMED: list[tuple[str, bytes, ErrorCode, str]] = [
    ("empty line", b"\n", BAD, "empty"),
    ("only spaces", b"   \r\n", BAD, "empty"),
    ("not utf-8", b'{"version":1,"cmd":"st\xffatus"}', BAD, "not UTF-8"),
    ("latin-1 body", b'{"version":1,"cmd":"send","to":"a","body":"caf\xe9"}', BAD, "not UTF-8"),
    ("utf-8 bom", b'\xef\xbb\xbf{"version":1,"cmd":"status"}', BAD, "not valid JSON"),
    ("plain text", b"status\n", BAD, "not valid JSON"),
    ("truncated object", b'{"version":1,"cmd":"sta', BAD, "not valid JSON"),
    ("trailing garbage", b'{"version":1,"cmd":"status"} x', BAD, "not valid JSON"),
    ("two objects", b'{"version":1,"cmd":"status"}{"version":1}', BAD, "not valid JSON"),
    ("single quotes", b"{'version':1,'cmd':'status'}", BAD, "not valid JSON"),
    ("trailing comma", b'{"version":1,"cmd":"status",}', BAD, "not valid JSON"),
    ("NaN", b'{"version":1,"cmd":"logs","name":"a","limit":NaN}', BAD, "NaN is not valid"),
    ("Infinity", b'{"version":1,"cmd":"logs","name":"a","after_id":Infinity}', BAD, "Infinity"),
    ("-Infinity", b'{"version":1,"cmd":"approve","id":-Infinity}', BAD, "-Infinity"),
    ("float overflow", b'{"version":1,"cmd":"approve","id":1e999}', BAD, "out of range"),
    ("5000-digit integer", b'{"version":1,"cmd":"approve","id":' + b"9" * 5000 + b"}", BAD, "JSON"),
    ("duplicate cmd", b'{"version":1,"cmd":"status","cmd":"destroy"}', BAD, "`cmd` appears twice"),
    ("deeply nested", b'{"version":1,"cmd":"status","x":' + b"[" * 100_000, BAD, "nested"),
    ("nested past the cap", line(cmd="status", x=json.loads("[" * 40 + "]" * 40)), BAD, "nested"),
    ("array", b'[{"version":1,"cmd":"status"}]', REQ, "an array, not a JSON object"),
    ("string", b'"status"', REQ, "a string, not a JSON object"),
    ("number", b"42", REQ, "a number, not a JSON object"),
    ("null", b"null", REQ, "null, not a JSON object"),
    ("no version", b'{"cmd":"status"}', VER, "no `version`"),
    (
        "version 2",
        line(cmd="status").replace(b'"version": 1', b'"version": 2'),
        VER,
        "version 2 is not supported; this hive-c0re speaks version 1",
    ),
    ("version 0", b'{"version":0,"cmd":"status"}', VER, "speaks version 1"),
    (
        "version as string",
        b'{"version":"1","cmd":"status"}',
        VER,
        "must be an integer, not a string",
    ),
    ("version true", b'{"version":true,"cmd":"status"}', VER, "not a boolean"),
    ("version 1.0", b'{"version":1.0,"cmd":"status"}', VER, "must be an integer"),
    ("no cmd", b'{"version":1}', CMD, "no `cmd`"),
    ("unknown cmd", line(cmd="reboot"), CMD, 'no command "reboot"'),
    ("cmd in capitals", line(cmd="STATUS"), CMD, 'no command "STATUS"'),
    ("cmd a number", line(cmd=7), CMD, "must be a string, not a number"),
    ("cmd null", line(cmd=None), CMD, "must be a string, not null"),
    ("unknown field", line(cmd="status", verbose=True), REQ, "unknown field `verbose`"),
    ("misspelt field", line(cmd="send", to="a", bdoy="hi"), REQ, "unknown field `bdoy`"),
    ("missing field", line(cmd="send", to="alice"), REQ, "missing field `body`"),
    ("approve without id", line(cmd="approve"), REQ, "missing field `id`"),
    ("id as string", line(cmd="approve", id="3"), REQ, "`id` must be an integer, not a string"),
    ("id true", line(cmd="approve", id=True), REQ, "`id` must be an integer, not a boolean"),
    ("id 3.0", line(cmd="deny", id=3.0), REQ, "`id` must be an integer, not a number (3.0)"),
    ("id null", line(cmd="deny", id=None), REQ, "`id` must be an integer, not null"),
    ("id zero", line(cmd="approve", id=0), REQ, "`id` must be at least 1"),
    ("id negative", line(cmd="approve", id=-5), REQ, "`id` must be at least 1 (got -5)"),
    ("id over int64", line(cmd="approve", id=2**63), REQ, "`id` must be at most"),
    ("id huge", line(cmd="approve", id=10**40), REQ, "`id` must be at most"),
    (
        "note a list",
        line(cmd="approve", id=1, note=["x"]),
        REQ,
        "`note` must be a string, not an array",
    ),
    ("note too long", line(cmd="approve", id=1, note="x" * 2001), REQ, "longer than 2000"),
    ("by too long", line(cmd="deny", id=1, by="x" * 65), REQ, "`by` is longer than 64"),
    (
        "body an object",
        line(cmd="send", to="a", body={"t": 1}),
        REQ,
        "`body` must be a string, not an object",
    ),
    ("empty name", line(cmd="kill", name=""), REQ, "`name` must not be empty"),
    ("name a number", line(cmd="start", name=5), REQ, "`name` must be a string"),
    ("name too long", line(cmd="stop", name="a" * 65), REQ, "`name` is longer than 64"),
    (
        "confirm as string",
        line(cmd="destroy", name="a", confirm="yes"),
        REQ,
        "`confirm` must be true or false",
    ),
    (
        "confirm as 1",
        line(cmd="destroy", name="a", confirm=1),
        REQ,
        "`confirm` must be true or false",
    ),
    (
        "pending_only null",
        line(cmd="approvals", pending_only=None),
        REQ,
        "`pending_only` must be true or false",
    ),
    (
        "after_id negative",
        line(cmd="logs", name="a", after_id=-1),
        REQ,
        "`after_id` must be at least 0",
    ),
    ("limit zero", line(cmd="logs", name="a", limit=0), REQ, "`limit` must be at least 1"),
    (
        "limit too big",
        line(cmd="logs", name="a", limit=1_000_000),
        REQ,
        "`limit` must be at most 1000",
    ),
    (
        "limit true",
        line(cmd="logs", name="a", limit=True),
        REQ,
        "`limit` must be an integer, not a boolean",
    ),
    ("purpose too long", line(cmd="spawn", name="b", purpose="p" * 4001), REQ, "longer than 4000"),
    ("NUL in a name", line(cmd="kill", name="a\x00b"), REQ, "`name` contains a NUL"),
    ("lone surrogate", b'{"version":1,"cmd":"send","to":"a","body":"\\ud800"}', REQ, "unpaired"),
    (
        "request_id a bool",
        line(cmd="status", request_id=False),
        REQ,
        "`request_id` must be a string or an integer",
    ),
    (
        "request_id an object",
        line(cmd="status", request_id={}),
        REQ,
        "`request_id` must be a string or an integer",
    ),
    (
        "request_id too long",
        line(cmd="status", request_id="r" * 129),
        REQ,
        "`request_id` is longer than 128",
    ),
    ("six problems at once", line(cmd="send", a=1, b=2, c=3, d=4), REQ, "`a`; and 3 more"),
    ("login without secret", line(cmd="login", name="b", kind="api_key"), REQ, "missing field"),
    ("login without kind", line(cmd="login", name="b", secret="s"), REQ, "missing field `kind`"),
    (
        "login unknown kind",
        line(cmd="login", name="b", kind="password", secret="s"),
        REQ,
        "`kind` must be 'oauth_token', 'api_key' or 'credentials_json'",
    ),
    (
        "login kind in capitals",
        line(cmd="login", name="b", kind="API_KEY", secret="s"),
        REQ,
        "`kind` must be",
    ),
    (
        "login empty secret",
        line(cmd="login", name="b", kind="api_key", secret=""),
        REQ,
        "`secret` must not be empty",
    ),
    (
        "login secret a number",
        line(cmd="login", name="b", kind="api_key", secret=12345),
        REQ,
        "`secret` must be a string, not a number (hidden)",
    ),
    (
        "login secret too long",
        line(cmd="login", name="b", kind="api_key", secret="s" * 70_000),
        REQ,
        "`secret` is longer than 65536 characters",
    ),
    ("login without name", line(cmd="login", kind="api_key", secret="s"), REQ, "missing field"),
]


@pytest.mark.parametrize(
    ("raw", "code", "says"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_a_malformed_line_gets_a_coded_error_saying_what_is_wrong(raw, code, says):
    error = parse_request(raw)
    assert isinstance(error, ProtocolError), error
    assert error.code == code, error
    assert says in error.message, error.message
    assert error.hint, "every error says what to do"
    response = error.response()
    assert response["ok"] is False and response["error"] == code.value
    assert response["version"] == PROTOCOL_VERSION


def test_there_are_at_least_thirty_malformed_cases():
    assert len(MALFORMED) >= 30


def test_a_bad_request_hint_shows_what_the_command_takes():
    error = parse_request(line(cmd="send", to="alice", text="hi"))
    assert isinstance(error, ProtocolError)
    assert error.hint == usage("send")
    assert "to (string), body (string)" in error.hint
    assert '"cmd": "send"' in error.hint  # an example to copy


def test_unknown_command_lists_the_commands():
    error = parse_request(line(cmd="reboot"))
    assert isinstance(error, ProtocolError)
    for cmd in ("list", "status", "approve", "destroy", "logs", "urls"):
        assert cmd in error.hint


def test_errors_echo_a_valid_request_id():
    error = parse_request(line(cmd="approve", id="x", request_id=42))
    assert isinstance(error, ProtocolError) and error.request_id == 42
    assert error.response()["request_id"] == 42
    unknown = parse_request(line(cmd="nope", request_id="q1"))
    assert isinstance(unknown, ProtocolError) and unknown.request_id == "q1"


def test_an_over_long_line_is_refused_without_parsing():
    raw = line(cmd="send", to="alice", body="x" * (MAX_LINE_BYTES + 10))
    error = parse_request(raw)
    assert isinstance(error, ProtocolError) and error.code == ErrorCode.LINE_TOO_LONG
    assert str(MAX_LINE_BYTES) in error.message
    small = parse_request(line(cmd="send", to="a", body="x" * 100), max_bytes=50)
    assert isinstance(small, ProtocolError) and small.code == ErrorCode.LINE_TOO_LONG


def test_responses_are_one_json_line_and_read_back():
    ok = encode_response(ok_response({"n": 1, "text": "◆"}, request_id=9))
    assert ok.endswith(b"\n") and ok.count(b"\n") == 1
    parsed = parse_response(ok)
    assert parsed is not None and parsed.ok and parsed.result == {"n": 1, "text": "◆"}
    assert parsed.request_id == 9 and parsed.version == PROTOCOL_VERSION
    err = parse_response(encode_response(error_response(ErrorCode.REFUSED, "no", "because")))
    assert err is not None and not err.ok
    assert (err.error, err.message, err.hint) == ("refused", "no", "because")
    assert parse_response(b"HTTP/1.1 400 Bad Request\r\n") is None
    with pytest.raises(ValueError):
        encode_response(ok_response(float("nan")))


# -- login: the one request that carries a secret ------------------------------------------------

SECRET = "sk-ant-oat01-" + "q" * 60 + "LEAK"


def test_login_parses_and_its_secret_never_shows():
    parsed = parse_request(line(cmd="login", name="bob", kind="oauth_token", secret=SECRET))
    assert isinstance(parsed, LoginRequest)
    assert (parsed.name, parsed.kind) == ("bob", "oauth_token")
    assert parsed.secret.get_secret_value() == SECRET and parsed.secrets() == (SECRET,)
    assert SECRET not in repr(parsed) and SECRET not in str(parsed)
    assert SECRET not in parsed.model_dump_json()
    assert "secret" in LoginRequest.secret_fields and not ApproveRequest.secret_fields


def test_login_kinds_are_the_credential_kinds():
    assert set(typing.get_args(LoginKind)) == {k.value for k in CredentialKind}
    assert "name (string), kind (" in usage("login") and "secret (string)" in usage("login")


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "bob", "kind": "api_key", "secret": [SECRET]},
        {"name": "bob", "kind": "api_key", "secret": {"key": SECRET}},
        {"name": "bob", "kind": "api_key", "secret": SECRET * 900},
        {"name": "bob", "kind": SECRET, "secret": SECRET},
        {"name": "bob", "kind": "api_key", "secret": SECRET, "extra": True},
        {"name": "", "kind": "api_key", "secret": SECRET},
        {"name": "bob", "kind": "api_key", "secret": SECRET + "\x00"},
        {"name": "bob", "kind": "api_key", "secret": SECRET, "request_id": [1]},
        {"name": "bob", "kind": "api_key", "secret": True},
    ],
)
def test_a_refused_login_echoes_no_secret(fields):
    error = parse_request(line(cmd="login", **fields))
    assert isinstance(error, ProtocolError) and error.code == REQ, error
    answer = encode_response(error.response()).decode()
    assert "sk-ant-oat01-qq" not in answer and "qqqq" not in answer, answer
