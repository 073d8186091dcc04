"""Each sandboxed agent's only way out: a reverse proxy to the model API on a unix socket.

A bwrap sandbox shares no network with the host (`--unshare-all`: only its own loopback), so
claude inside cannot reach the model API, and nothing else on the host either (DESIGN §1). For
each agent hive-c0re serves this proxy on `<run>/agents/<name>/model.sock`, which the sandbox sees
at /run/hive/model.sock; inside, `hive-agent run` (agent_harness.sandbox_run) forwards
127.0.0.1:PORT to it and claude runs with `ANTHROPIC_BASE_URL=http://127.0.0.1:PORT`.

The upstream is `settings.model_base_url`, else `settings.agent_extra_env["ANTHROPIC_BASE_URL"]`,
else https://api.anthropic.com; it is parsed once, and its path is kept as a prefix (a gateway at
https://gw.example/anthropic gets /anthropic/v1/messages). The agent is untrusted: its request
only ever contributes a validated path and a re-encoded query to that URL, never raw bytes, so
no target can name another host or port (a raw `%2Fv1%2F@127.0.0.1:7000/…` once made the
dashboard the URL's authority).

What passes (origin-form targets only):
- `GET`/`HEAD /` (claude's probe);
- `/v1/<segment>/…` (messages, count_tokens, models, files, …), each segment non-empty and made
  of letters, digits and `-._~` only (no `.`/`..`, no percent-encoding), with an optional query
  of letters, digits, `-._~*+=&,` and `%XX` escapes (no control characters once decoded).
Everything else gets a 4xx with an Anthropic-style error body saying what was refused: 400 for
a malformed target (absolute- or authority-form, `//`, dot segments, escapes, odd characters),
404 for a clean path outside the model API, 405 for an odd method, 413/414 for a body or target
too large. The socket is not a way to the host's other services.

Request headers go through as sent (x-api-key, authorization, anthropic-*) minus hop-by-hop
ones and Host (the HTTP client sets the upstream's own); redirects are not followed. The
response's status, headers and body come back unchanged and unbuffered (SSE streams chunk by
chunk, compressed bodies as they are). Upstream errors are the upstream's statuses and bodies;
when the upstream cannot be reached the proxy answers 502 (504 on a timeout), and a bug of its
own is a 502 too, logged without the request's headers or body (they carry API keys).

The HTTP client honours hive-c0re's HTTPS_PROXY/NO_PROXY environment (trust_env) and the system's
trust store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import traceback
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit

import httpx2

from api.unix_socket import AgentApp, PerAgentServers
from hyperhive.errors import HiveError
from hyperhive.settings import HiveSettings

log = logging.getLogger(__name__)

MODEL_SOCKET_NAME = "model.sock"
DEFAULT_UPSTREAM = "https://api.anthropic.com"
# claude bounds one API request itself (API_TIMEOUT_MS, 10 min by default); stay above it.
UPSTREAM_TIMEOUT = httpx2.Timeout(connect=15.0, read=900.0, write=120.0, pool=30.0)
MAX_REQUEST_BYTES = 64 * 1024 * 1024
# Path plus query; claude's are under 100 characters.
MAX_TARGET_CHARS = 4096
FORWARDED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
ROOT_METHODS = frozenset({"GET", "HEAD"})
# RFC 9110 §7.6.1 plus the usual non-standard ones; never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Host and content-length are set again by the client for the upstream request. The agent is
# not forwarded from anywhere: a gateway upstream may route or trust on these, so none pass.
REQUEST_DROPPED = HOP_BY_HOP | {
    "host",
    "content-length",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-real-ip",
}
# RFC 3986 unreserved characters: all claude's paths are made of (/v1/messages/count_tokens,
# /v1/models/claude-…, /v1/files/file_…).
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
# What claude's query encoder (URLSearchParams: `beta=true`, `limit=…&after_id=…`) emits, plus
# `~` and `,`; anything else (`#`, quotes, `@`, `/`, …) has no business in a model API query.
_QUERY = re.compile(r"(?:[A-Za-z0-9._~*+=&,-]|%[0-9A-Fa-f]{2})*")
_QUERY_KEPT = "*,"  # besides letters, digits and -._~, left as they are when re-encoding
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SHOWN_TARGET_CHARS = 200
_UPSTREAM_HINT = (
    "set HIVE_MODEL_BASE_URL (or ANTHROPIC_BASE_URL in HIVE_AGENT_EXTRA_ENV) to an http(s) URL "
    "with a host and at most a path, e.g. https://api.anthropic.com or "
    "https://gateway.example/anthropic"
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ModelProxyError(HiveError):
    """An agent's model proxy socket cannot be served."""


def model_socket_path(settings: HiveSettings, agent: str) -> Path:
    return settings.agent_run_dir(agent) / MODEL_SOCKET_NAME


def upstream_url(settings: HiveSettings) -> str:
    return (
        settings.model_base_url
        or settings.agent_extra_env.get("ANTHROPIC_BASE_URL")
        or DEFAULT_UPSTREAM
    )


@dataclass(frozen=True)
class UpstreamURL:
    """The configured model API, parsed once: a request adds a path and a query, nothing else."""

    origin: httpx2.URL  # scheme://host[:port]/
    prefix: str  # "" or a percent-encoded path without a trailing slash, e.g. "/anthropic"

    @classmethod
    def parse(cls, text: str) -> UpstreamURL:
        """Raises ModelProxyError for anything but http(s)://host[:port][/path]."""

        def refuse(what: str) -> ModelProxyError:
            return ModelProxyError(f"the model API URL {text!r} {what}", _UPSTREAM_HINT)

        if not text or "\\" in text or any(c.isspace() or not c.isprintable() for c in text):
            raise refuse("is empty or holds whitespace, control characters or a backslash")
        if "?" in text or "#" in text:
            raise refuse("has a query or a fragment: only scheme, host, port and path may be set")
        parts = urlsplit(text)
        if parts.scheme.lower() not in ("http", "https"):
            raise refuse("is not an http:// or https:// URL")
        if "@" in parts.netloc:
            raise refuse(
                "has a user name or password in it: credentials belong in the agents' API key "
                "or login, not in the URL"
            )
        if not parts.hostname or "%" in parts.netloc:
            raise refuse("has no host, or an escaped one")
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when it is read
            url = httpx2.URL(text)
        except (ValueError, httpx2.InvalidURL) as e:
            raise refuse(f"is not a valid URL ({e})") from e
        return cls(url.copy_with(raw_path=b"/"), url.raw_path.decode("ascii").rstrip("/"))

    def __str__(self) -> str:
        return f"{self.origin.scheme}://{self.origin.netloc.decode('ascii')}{self.prefix}"

    def url_for(self, target: Target) -> httpx2.URL:
        raw = self.prefix + target.path + (f"?{target.query}" if target.query else "")
        url = self.origin.copy_with(raw_path=raw.encode("ascii"))
        # Cannot happen with a validated target; checked anyway, as this is the whole point.
        if (url.scheme, url.host, url.port) != (
            self.origin.scheme,
            self.origin.host,
            self.origin.port,
        ):
            raise RuntimeError("a forwarded URL's authority differs from the upstream's")
        return url


@dataclass(frozen=True)
class Target:
    """A request target the proxy forwards, re-encoded: the only part of a URL a request sets."""

    path: str  # "/" or "/v1/<segment>/…"
    query: str  # "" for none


class RefusedTarget(Exception):
    """A request the proxy does not forward; `status` and `kind` are the answer's."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind


def parse_target(raw_path: bytes, query: bytes = b"") -> Target:
    """The target of a request (its raw path and query, undecoded) if it is forwarded."""
    try:
        path_text = raw_path.decode("ascii")
        query_text = query.decode("ascii")
    except UnicodeDecodeError:
        raise RefusedTarget("the target is not ASCII") from None
    if len(path_text) + len(query_text) > MAX_TARGET_CHARS:
        raise RefusedTarget(f"the target is over {MAX_TARGET_CHARS} characters", 414)
    return Target(_model_path(path_text), _reencoded_query(query_text))


def is_model_path(raw_path: str) -> bool:
    """Whether a raw (undecoded) path is one the proxy forwards."""
    try:
        parse_target(raw_path.encode("utf-8"))
    except RefusedTarget:
        return False
    return True


def _model_path(path: str) -> str:
    if not path.startswith("/"):
        if "://" in path:
            raise RefusedTarget("absolute-form targets (http://host/…) are not forwarded")
        raise RefusedTarget("only origin-form targets (/ or /v1/…) are forwarded")
    if path.startswith("//"):
        raise RefusedTarget("a path starting with // is not forwarded")
    if path == "/":
        return path
    segments = path[1:].split("/")
    for segment in segments:
        if not segment:
            raise RefusedTarget("empty path segments (// or a trailing /) are not forwarded")
        if segment in (".", ".."):
            raise RefusedTarget("dot segments (. and ..) are not forwarded")
        if not _SEGMENT.fullmatch(segment):
            raise RefusedTarget(
                "path segments may hold only letters, digits and -._~ (no %-escapes)"
            )
    if segments[0] != "v1" or len(segments) < 2:
        raise RefusedTarget("only the model API (/ and /v1/…) is forwarded", 404, "not_found_error")
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


def _reencoded_query(query: str) -> str:
    if not _QUERY.fullmatch(query):
        raise RefusedTarget(
            "the query may hold only letters, digits, -._~*+=&, and %XX escapes "
            "(no #, spaces, quotes or other punctuation)"
        )
    if not query:
        return ""
    return "&".join(
        "=".join(_reencoded_query_part(part) for part in field.split("=", 1))
        for field in query.split("&")
    )


def _reencoded_query_part(part: str) -> str:
    # Form decoding and encoding: `+` stays a space and `%2B` a plus, `%26` never becomes `&`.
    try:
        text = unquote_plus(part, errors="strict")
    except UnicodeDecodeError:
        raise RefusedTarget("a %-escape in the query is not UTF-8") from None
    if _CONTROL.search(text):
        raise RefusedTarget("the query holds control characters")
    return quote_plus(text, safe=_QUERY_KEPT)


def _check_method(method: str, target: Target) -> None:
    allowed = ROOT_METHODS if target.path == "/" else FORWARDED_METHODS
    if method not in allowed:
        raise RefusedTarget(
            f"method {method} is not allowed here (only {', '.join(sorted(allowed))})", 405
        )


def _shown_target(raw_path: bytes, query: bytes) -> str:
    target = raw_path + (b"?" + query if query else b"")
    text = target.decode("ascii", "backslashreplace")
    if len(text) > _SHOWN_TARGET_CHARS:
        return text[:_SHOWN_TARGET_CHARS] + "…"
    return text


def _error_body(status: int, kind: str, message: str) -> tuple[int, bytes]:
    body = {"type": "error", "error": {"type": kind, "message": f"hive model proxy: {message}"}}
    return status, json.dumps(body).encode()


def _where(e: BaseException) -> str:
    """An exception's type and where it was raised, never its message: that may quote a header
    (an API key) or the request body."""
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return type(e).__name__
    last = frames[-1]
    return f"{type(e).__name__} at {Path(last.filename).name}:{last.lineno} in {last.name}"


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class _TrackedSend:
    """`send`, remembering whether the response has started (after that, no error answer)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class ModelProxyApp:
    """The ASGI app of one agent's proxy (a raw ASGI app: nothing may buffer the stream)."""

    def __init__(self, agent: str, upstream: UpstreamURL | str, client: httpx2.AsyncClient) -> None:
        self.agent = agent
        self.upstream = (
            upstream if isinstance(upstream, UpstreamURL) else UpstreamURL.parse(upstream)
        )
        self.client = client
        self.started = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.started.set()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracked = _TrackedSend(send)
        try:
            await self._forward(scope, receive, tracked)
        except Exception as e:
            # httpx's messages name no header; anything else may quote one, so only its place.
            what = repr(e) if isinstance(e, httpx2.HTTPError) else _where(e)
            if tracked.started:
                # Typically the upstream's stream broke after its headers went out. Returning
                # without ending the body makes the server drop the connection, so the client
                # sees a truncated response, never a falsely complete one.
                log.warning("model proxy for %s: the response broke off: %s", self.agent, what)
                return
            log.error("model proxy for %s: unexpected %s", self.agent, what)
            await _respond(
                send,
                *_error_body(
                    502,
                    "api_error",
                    f"internal error ({type(e).__name__}); hive-c0re's log has where",
                ),
            )

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        # The raw target, as sent: deciding on the decoded path and forwarding something else
        # is how `%2Fv1%2F@host:port/…` once reached another host.
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string") or b""
        try:
            target = parse_target(raw_path, query)
            if scope["path"] != target.path:
                raise RefusedTarget("the path decodes differently from how it was sent")
            _check_method(method, target)
        except RefusedTarget as refused:
            shown = _shown_target(raw_path, query)
            log.warning(
                "model proxy for %s refused %s %r: %s", self.agent, method, shown, refused.message
            )
            await _respond(
                send,
                *_error_body(refused.status, refused.kind, f"{method} {shown}: {refused.message}"),
            )
            return
        try:
            body = await _read_body(receive)
        except _TooLarge:
            await _respond(
                send,
                *_error_body(413, "request_too_large", f"request over {MAX_REQUEST_BYTES} bytes"),
            )
            return
        except _Disconnected:
            return
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        dropped = REQUEST_DROPPED | _connection_tokens(raw_headers)
        headers = [
            (name, value)
            for name, value in raw_headers
            if name.decode("latin-1").lower() not in dropped
        ]
        url = self.upstream.url_for(target)
        request = self.client.build_request(method, url, headers=headers, content=body)
        try:
            response = await self.client.send(request, stream=True)
        except httpx2.TimeoutException as e:
            log.warning(
                "model proxy for %s: %s %s timed out: %r", self.agent, method, target.path, e
            )
            await _respond(
                send, *_error_body(504, "api_error", f"the model API timed out ({self.upstream})")
            )
            return
        except httpx2.HTTPError as e:
            log.warning("model proxy for %s: %s %s failed: %r", self.agent, method, target.path, e)
            await _respond(
                send,
                *_error_body(
                    502, "api_error", f"cannot reach the model API at {self.upstream}: {e}"
                ),
            )
            return
        try:
            await _until_disconnected(receive, _relay(response, send, head=method == "HEAD"))
        finally:
            await response.aclose()


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[str]:
    """Header names a `Connection` header declares hop-by-hop (RFC 9110 §7.6.1)."""
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
        if token.strip()
    }


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _relay(response: httpx2.Response, send: Send, *, head: bool) -> None:
    """The upstream's status, headers and raw body, each chunk sent as soon as it arrives."""
    dropped = HOP_BY_HOP | _connection_tokens(response.headers.raw)
    headers = [
        (name, value)
        for name, value in response.headers.raw
        if name.decode("latin-1").lower() not in dropped
    ]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    if not head:
        # A broken upstream stream raises here, after the headers (see ModelProxyApp._http).
        async for chunk in response.aiter_raw():
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_disconnected(receive: Receive, work: Awaitable[None]) -> None:
    """Run `work`, cancelling it if the client goes away (then the upstream request is closed)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if not task.cancelled():
        task.result()  # the relay's own failure, if any


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class ModelProxies(PerAgentServers):
    """One model proxy per agent, each on `<settings.agent_run_dir(agent)>/model.sock`.

    Started for the agents of a backend whose sandboxes have no network (`needs_model_proxy`);
    `start` is idempotent, `stop`/`stop_all` remove the sockets. A bad upstream URL is refused
    here, when hive-c0re starts, rather than at an agent's first request.
    """

    label = "model proxy"
    error = ModelProxyError

    def __init__(self, settings: HiveSettings, *, upstream: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.upstream = upstream or upstream_url(settings)
        self._upstream = UpstreamURL.parse(self.upstream)

    def socket_path(self, agent: str) -> Path:
        return model_socket_path(self.settings, agent)

    def build(self, agent: str) -> AgentApp:
        client = httpx2.AsyncClient(timeout=UPSTREAM_TIMEOUT, follow_redirects=False)
        # Only the agent's own headers go upstream: no user-agent/accept-encoding of ours.
        client.headers.clear()
        app = ModelProxyApp(agent, self._upstream, client)
        return AgentApp(
            app,
            app.started,
            after_stop=client.aclose,
            uvicorn_options={
                "server_header": False,
                "date_header": False,
                # h11 hands the app the target exactly as sent; httptools would silently drop
                # the host of an absolute-form target and any fragment before the app sees them.
                "http": "h11",
                "ws": "none",
            },
        )
