"""JSON as the operator's surfaces accept it: UTF-8, standard (no NaN/Infinity, no number out of
float range), no duplicate keys, bounded nesting. `json.loads` alone silently keeps the last of
duplicate keys, so `{"to": "alice", "to": "bob"}` would mean whichever the parser liked."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32


class StrictJsonError(ValueError):
    """Why the text is not JSON we accept; the message names the problem."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise StrictJsonError(f"the key `{key}` appears twice")
        obj[key] = value
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJsonError(f"the number {text} is out of range")
    return value


def _non_standard_constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not valid JSON")


def json_kind(value: Any) -> str:
    """How JSON calls the value's type, with its article: "a string", "an array", …"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def loads_strict(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `data` or raise StrictJsonError saying what is wrong with it."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise StrictJsonError(
                f"the text is not UTF-8 (byte {e.start}: {data[e.start : e.start + 1]!r})"
            ) from None
    else:
        text = data
    if not text.strip():
        raise StrictJsonError("empty")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_finite_float,
            parse_constant=_non_standard_constant,
        )
    except StrictJsonError:
        raise
    except RecursionError:
        raise StrictJsonError(f"the JSON is nested more than {max_depth} levels deep") from None
    except ValueError as e:  # JSONDecodeError, or an integer beyond Python's digit limit
        raise StrictJsonError(f"not valid JSON: {e}") from None
    if depth(value) > max_depth:
        raise StrictJsonError(f"the JSON is nested more than {max_depth} levels deep")
    return value
