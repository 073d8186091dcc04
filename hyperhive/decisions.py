"""Reading a decision as sent to an approval workflow's `decide` update or signal.

The payload is decoded as plain JSON and checked here rather than by the SDK's argument
decoding, which answers a malformed one only with "Failed decoding arguments": the operator
who typed it into `temporal workflow update execute` is told what is wrong with it."""

from __future__ import annotations

from pydantic import JsonValue, ValidationError

from hyperhive.models import Decision

SHAPE = '{"approved": true|false, "by": "<who decides>", "note": "<optional>"}'


class BadDecision(ValueError):
    """A payload that is not a decision; its text says what is wrong and what one looks like."""


def parse_decision(raw: JsonValue) -> Decision:
    try:
        return Decision.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or 'the decision'}: {err['msg']}"
            for err in e.errors()
        )
        raise BadDecision(f"not a decision ({problems}); send {SHAPE}") from None
