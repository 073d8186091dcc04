"""Who may talk to the operator's pages: only requests addressed to this server by a name it
answers to, unsafe ones only from its own pages, and no page inside another site's frame.

- **Host allow-list.** A page on evil.example whose name is re-pointed at 127.0.0.1 (DNS
  rebinding) makes the browser send `Host: evil.example` to the dashboard and read the answer as
  same-origin, CSRF token included. Every request must name an allowed host: loopback names,
  the bind address, and HIVE_ALLOWED_HOSTS; anything else is 400 `bad_host`.
- **Origin check.** A browser sends `Origin` with every unsafe request; one that is not this
  very server (scheme, host and port of the request) is refused 403 `bad_origin` even with a
  valid token: another port on localhost is another site. (Tools that send no Origin, such as
  curl with the token, are not browsers and pass.)
- **Headers** on every answer: no framing (`X-Frame-Options: DENY`,
  `frame-ancestors 'none'`), `nosniff`, and no Referer leaving the page.

Plain ASGI, so SSE streams pass through untouched.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.csrf import UNSAFE_METHODS
from api.refusals import RequestRefused

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARD_BINDS = ("", "0.0.0.0", "::")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


def allowed_hosts(bind_host: str, extra: Iterable[str]) -> frozenset[str]:
    """Host names (lower case, no port, IPv6 without brackets) the pages answer to."""
    names = {*LOOPBACK_NAMES, *(e.strip().lower().strip("[]") for e in extra if e.strip())}
    if bind_host not in _WILDCARD_BINDS:
        names.add(bind_host.lower().strip("[]"))
    return frozenset(names)


def host_name(value: str) -> str | None:
    """The host part of a Host header (`name`, `name:port`, `[v6]:port`), or None if malformed."""
    value = value.strip().lower()
    if not value or any(c in value for c in "/@?#\\ "):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not value[end + 1 :].startswith(":")):
            return None
        inner = value[1:end]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return None
        return inner
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _port(authority: str, scheme: str) -> int | None:
    tail = authority.rsplit("]", 1)[-1]
    _, colon, port = tail.rpartition(":")
    if not colon:
        return _DEFAULT_PORTS.get(scheme)
    return int(port) if port.isdigit() else None


def same_origin(origin: str, scheme: str, host: str) -> bool:
    """Whether an Origin header names the server a request with this scheme and Host reached."""
    parts = urlsplit(origin.strip())
    if parts.scheme != scheme or not parts.netloc:
        return False
    return host_name(parts.netloc) == host_name(host) and _port(parts.netloc, scheme) == _port(
        host.strip(), scheme
    )


class HostGuardMiddleware:
    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    def _check(self, scope: Scope) -> RequestRefused | None:
        headers = Headers(scope=scope)
        shown = ", ".join(sorted(self.hosts))
        host = host_name(headers.get("host", ""))
        if host not in self.hosts:
            return RequestRefused(
                400,
                "bad_host",
                f"this server does not answer to the host {headers.get('host', '')[:100]!r} "
                f"(it answers to {shown})",
                "open it by one of those names, or add the name to HIVE_ALLOWED_HOSTS",
            )
        origin = headers.get("origin")
        unsafe = scope.get("method") in UNSAFE_METHODS
        scheme = str(scope.get("scheme", "http")).replace("ws", "http")
        if unsafe and origin is not None and not same_origin(origin, scheme, headers["host"]):
            return RequestRefused(
                403,
                "bad_origin",
                f"requests from the page {origin[:100]!r} are not accepted",
                "use the dashboard itself; scripts should use the admin socket (`hive`)",
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = self._check(scope)
        if refused is not None and scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        if refused is not None:
            await refused.response()(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)
