"""Parse JSON text received from a peer: RFC 8259 only, nesting bounded.

NaN and Infinity are refused because the peers are JavaScript programs whose `JSON.parse`
refuses them: accepted here, one peer's non-JSON would be forwarded to the other. Nesting is
bounded because a value just under the parser's recursion limit still breaks later recursive
work on it (copies, validation, re-encoding) in the middle of a call.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_DEPTH", "JsonTextError", "loads"]

MAX_DEPTH = 100


class JsonTextError(ValueError):
    """Text that parses in Python but is not acceptable JSON from a peer."""


def _refuse_constant(name: str) -> Any:
    raise JsonTextError(f"{name} is not JSON")


def loads(text: str | bytes) -> Any:
    """`json.loads`, raising ValueError (incl. UnicodeDecodeError, JsonTextError) on bad text."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise JsonTextError(f"nested deeper than {MAX_DEPTH} levels") from None
    if _too_deep(value):
        raise JsonTextError(f"nested deeper than {MAX_DEPTH} levels")
    return value


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
