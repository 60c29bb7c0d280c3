"""JSON text to and from peers: RFC 8259 only, nesting bounded, numbers kept exact.

NaN and Infinity are refused because the peers are JavaScript programs whose `JSON.parse`
refuses them: accepted here, one peer's non-JSON would be forwarded to the other. Nesting is
bounded because a value just under the parser's recursion limit still breaks later recursive
work on it (copies, validation, re-encoding) in the middle of a call.

orjson does the work on every hot path (a turn parses and writes JSON four times); the standard
library takes over where the two would differ: text orjson refuses (the stdlib then gives the
error, or accepts what it always accepted, such as a lone surrogate escape), integers beyond
64 bits (orjson would turn them into floats on reading and refuses them on writing).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["MAX_DEPTH", "JsonTextError", "dumps", "loads"]

MAX_DEPTH = 100

# A run this long may be an integer orjson cannot keep exact (2**64 has 20 digits).
_LONG_DIGITS_TEXT = re.compile(r"\d{19}")
_LONG_DIGITS_BYTES = re.compile(rb"\d{19}")


class JsonTextError(ValueError):
    """Text that parses in Python but is not acceptable JSON from a peer."""


def _refuse_constant(name: str) -> Any:
    raise JsonTextError(f"{name} is not JSON")


def loads(text: str | bytes) -> Any:
    """Parse `text`, raising ValueError (incl. UnicodeDecodeError, JsonTextError) on bad text."""
    value: Any
    long_digits = (
        _LONG_DIGITS_TEXT.search(text) if isinstance(text, str) else _LONG_DIGITS_BYTES.search(text)
    )
    try:
        if long_digits is not None:
            raise orjson.JSONDecodeError("long integer", "", 0)
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError:
            raise JsonTextError(f"nested deeper than {MAX_DEPTH} levels") from None
    if _may_nest_deep(text) and _too_deep(value):
        raise JsonTextError(f"nested deeper than {MAX_DEPTH} levels")
    return value


def dumps(value: Any) -> str:
    """Compact JSON text of `value`: characters as they are, except in the rare value orjson
    refuses (an integer beyond 64 bits, a lone surrogate, ...), which is written ASCII-escaped
    so a lone surrogate still makes text that encodes to UTF-8."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, separators=(",", ":"))


def _may_nest_deep(text: str | bytes) -> bool:
    """False when `text` has too few opening brackets to nest deeper than MAX_DEPTH: the
    common case, decided without walking the parsed value."""
    if isinstance(text, str):
        return text.count("[") + text.count("{") > MAX_DEPTH
    return text.count(b"[") + text.count(b"{") > MAX_DEPTH


def _too_deep(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
