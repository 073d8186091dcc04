"""Plain-ASGI helpers shared by the middlewares that look at a request before the app does:
read its body within a bound, hand the same body on to the app, answer with a JSON body."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Message, Receive, Send


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None if the client went away; BodyTooLarge past `limit`."""
    body = bytearray()
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` once (as the whole request), then what `receive` gives."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A whole response whose body is already-encoded JSON."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
