"""What an agent's model proxy (api.model_proxy) forwards to: the upstream URL and the request
target, parsed and checked before any byte goes out.

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
Everything else raises RefusedTarget, carrying the 4xx the proxy answers with: 400 for a
malformed target (absolute- or authority-form, `//`, dot segments, escapes, odd characters), 404
for a clean path outside the model API, 405 for an odd method, 414 for a target too large.

Pure: no I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit

import httpx2

from hyperhive.errors import HiveError
from hyperhive.settings import HiveSettings

DEFAULT_UPSTREAM = "https://api.anthropic.com"
# Path plus query; claude's are under 100 characters.
MAX_TARGET_CHARS = 4096
FORWARDED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
ROOT_METHODS = frozenset({"GET", "HEAD"})
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


# Here rather than in api.model_proxy, which raises it too, because a bad upstream URL is one
# reason a proxy cannot be served.
class ModelProxyError(HiveError):
    """An agent's model proxy socket cannot be served."""


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


def check_method(method: str, target: Target) -> None:
    allowed = ROOT_METHODS if target.path == "/" else FORWARDED_METHODS
    if method not in allowed:
        raise RefusedTarget(
            f"method {method} is not allowed here (only {', '.join(sorted(allowed))})", 405
        )


def shown_target(raw_path: bytes, query: bytes) -> str:
    target = raw_path + (b"?" + query if query else b"")
    text = target.decode("ascii", "backslashreplace")
    if len(text) > _SHOWN_TARGET_CHARS:
        return text[:_SHOWN_TARGET_CHARS] + "…"
    return text
