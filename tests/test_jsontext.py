"""Peer JSON text: RFC 8259 only, bounded nesting, every refusal a ValueError."""

from __future__ import annotations

import pytest

from bridge.jsontext import MAX_DEPTH, JsonTextError, loads


def test_plain_json_parses() -> None:
    assert loads(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}


@pytest.mark.parametrize("text", ["NaN", '{"a": Infinity}', "[-Infinity]"])
def test_nan_and_infinity_are_refused(text: str) -> None:
    with pytest.raises(JsonTextError, match="not JSON"):
        loads(text)


def test_nesting_up_to_the_bound_parses() -> None:
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert loads('{"a":' * (MAX_DEPTH - 1) + "{}" + "}" * (MAX_DEPTH - 1)) is not None


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 600, 100_000])
def test_deeper_nesting_is_refused(depth: int) -> None:
    with pytest.raises(JsonTextError, match="nested deeper"):
        loads("[" * depth + "]" * depth)


@pytest.mark.parametrize("text", [b"\xff\xfe", "{", '{"a": 1} x'])
def test_bad_text_is_a_value_error(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        loads(text)
