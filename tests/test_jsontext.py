"""Peer JSON text: RFC 8259 only, bounded nesting, every refusal a ValueError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.jsontext import MAX_DEPTH, JsonTextError, dumps, loads


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


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_round_trip_is_exact_whatever_the_value(value: object) -> None:
    """orjson where it agrees with the stdlib, the stdlib elsewhere: the same values either way
    (integers beyond 64 bits and lone surrogates included)."""
    text = dumps(value)
    assert loads(text) == value
    assert loads(text.encode("utf-8")) == value
    assert loads(text) == json.loads(text)
    assert json.loads(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("123456789012345678901234567890", 123456789012345678901234567890),
        ('{"n": -18446744073709551617}', {"n": -18446744073709551617}),
        ('"\\ud800"', "\ud800"),  # a lone surrogate escape: what the stdlib always accepted
        ('{"a": 1, "a": 2}', {"a": 2}),
        ('"+4915112300000"', "+4915112300000"),
    ],
)
def test_what_orjson_would_change_or_refuse_is_read_as_before(text: str, value: object) -> None:
    assert loads(text) == value
    assert type(loads(text)) is type(value)


def test_dumps_is_compact_utf8_and_escapes_only_what_it_must() -> None:
    assert dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    assert dumps({"n": 2**70}) == '{"n":1180591620717411303424}'
    assert dumps({"s": "\ud800"}).encode("utf-8") == b'{"s":"\\ud800"}'
