"""Named transforms: values in, values out, TransformError on bad input."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.mapping.transforms import TRANSFORMS, TransformError


def t(name: str, value: Any) -> Any:
    return TRANSFORMS[name](value)


@pytest.mark.parametrize(
    ("value", "expected"), [(10, 10000), (10.0, 10000), (2.5, 2500), ("3", 3000), (0.0015, 2)]
)
def test_seconds_to_ms(value: Any, expected: int) -> None:
    assert t("seconds_to_ms", value) == expected
    assert isinstance(t("seconds_to_ms", value), int)


@pytest.mark.parametrize("value", [True, "soon", None, [1], {}])
def test_seconds_to_ms_rejects_non_numbers(value: Any) -> None:
    with pytest.raises(TransformError):
        t("seconds_to_ms", value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+4930123456", "tel:+4930123456"),
        ("4930123456", "tel:+4930123456"),
        ("+49 (30) 123-456", "tel:+4930123456"),
        ("tel:+4930123456", "tel:+4930123456"),
    ],
)
def test_tel_uri(value: str, expected: str) -> None:
    assert t("tel_uri", value) == expected


@pytest.mark.parametrize("value", ["", "  ", "agent", "+49abc", 4930123, None])
def test_tel_uri_rejects(value: Any) -> None:
    with pytest.raises(TransformError):
        t("tel_uri", value)


def test_dial_target_kinds() -> None:
    assert t("dial_target", [{"type": "phone", "number": "+1555"}]) == "tel:+1555"
    assert t("dial_target", {"type": "sip", "sipUri": "sip:a@b"}) == "sip:a@b"
    assert t("dial_target", [{"type": "user", "name": "bob@example.com"}]) == "sip:bob@example.com"
    first_wins = [{"type": "sip", "sipUri": "sip:x@y"}, {"type": "phone", "number": "+1"}]
    assert t("dial_target", first_wins) == "sip:x@y"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([{"type": "phone"}], "phone target has no number"),
        ([{"type": "phone", "number": "  "}], "phone target has no number"),
        ([{"type": "sip"}], "sip target has no sipUri"),
        ([{"type": "teams", "number": "x"}], "no AudioCodes equivalent"),
        ([], "dial has no target"),
        ("sip:a@b", "dial has no target"),
    ],
)
def test_dial_target_errors_are_clear(value: Any, message: str) -> None:
    with pytest.raises(TransformError, match=message):
        t("dial_target", value)


def test_dial_target_error_does_not_quote_the_number() -> None:
    with pytest.raises(TransformError) as info:
        t("dial_target", [{"type": "phone", "number": "+49abc5551234"}])
    assert "5551234" not in str(info.value)


def test_headers_to_sip_list() -> None:
    assert t("headers_to_sip_list", {"X-A": "1", "X-B": 2}) == [
        {"name": "X-A", "value": "1"},
        {"name": "X-B", "value": "2"},
    ]
    assert t("headers_to_sip_list", {}) is None
    listed = [{"name": "X-A", "value": "1"}]
    assert t("headers_to_sip_list", listed) == listed
    with pytest.raises(TransformError):
        t("headers_to_sip_list", "X-A: 1")
    with pytest.raises(TransformError):
        t("headers_to_sip_list", [{"name": "X-A"}])


def test_json_or_text() -> None:
    assert t("json_or_text", '{"a": [1, 2]}') == {"a": [1, 2]}
    assert t("json_or_text", "[1]") == [1]
    assert t("json_or_text", "{not json") == "{not json"
    assert t("json_or_text", "plain") == "plain"
    assert t("json_or_text", "42") == "42"
    assert t("json_or_text", {"a": 1}) == {"a": 1}


def test_scalar_conversions() -> None:
    assert t("str", 5) == "5"
    assert t("str", 5.0) == "5"
    assert t("str", True) == "true"
    assert t("int", "4") == 4
    assert t("int", 6.0) == 6
    assert t("bool", "false") is False
    assert t("bool", 1) is True
    assert t("float", 20) == 20.0
    for name, bad in [("str", {}), ("int", 4.5), ("int", True), ("bool", "maybe"), ("float", "x")]:
        with pytest.raises(TransformError):
            t(name, bad)


def test_list_helpers() -> None:
    assert t("first", ["a", "b"]) == "a"
    assert t("first", []) is None
    assert t("first", "a") == "a"
    assert t("as_list", "a") == ["a"]
    assert t("non_empty", "") is None
    assert t("non_empty", [0]) == [0]
    assert t("phrases", ["a", {"phrase": "b", "boost": 2}]) == ["a", "b"]
    assert t("phrases", []) is None
    with pytest.raises(TransformError):
        t("phrases", [1])


def test_voice_helpers() -> None:
    assert t("if_str", "en-US-Jenny") == "en-US-Jenny"
    assert t("if_str", {"name": "x"}) is None
    assert t("drop_default", "default") is None
    assert t("drop_default", "de-DE") == "de-DE"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<speak>Hello</speak>", "Hello"),
        (
            '<speak version="1.0"><voice name="en-US-Jenny">'
            'Hi <break time="1s"/> you</voice></speak>',
            'Hi <break time="1s"/> you',
        ),
        ('<?xml version="1.0"?>\n<speak> Hi </speak>', "Hi"),
        ("No markup", "No markup"),
        ("<voice name='x'>Only voice</voice>", "<voice name='x'>Only voice</voice>"),
    ],
)
def test_strip_ssml(value: str, expected: str) -> None:
    assert t("strip_ssml", value) == expected


def test_string_transforms_pass_non_strings_through() -> None:
    for name in ("lower", "upper", "strip", "strip_ssml", "collapse_whitespace"):
        assert t(name, 5) == 5
    assert t("collapse_whitespace", "  a \n\t b  ") == "a b"
    assert t("lower", "HandOver") == "handover"


def test_sip_headers_from_params() -> None:
    params = {"callIdentification": "abc", "n": 7, "obj": {"x": 1}}
    header_map = {"callIdentification": "X-Conv", "n": "X-N", "absent": "X-Absent", "obj": "X-O"}
    assert t("sip_headers_from_params", [params, header_map]) == {"X-Conv": "abc", "X-N": "7"}
    assert t("sip_headers_from_params", [params, None]) == {}
    with pytest.raises(TransformError):
        t("sip_headers_from_params", params)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"status": "answered"}, "answered"),
        ({"status": "failed", "reasonCode": "busy"}, "busy"),
        ({"status": "failed", "reasonCode": "no-answer"}, "no-answer"),
        ({"status": "failed", "reasonCode": "weird"}, "error"),
        ({"status": "failed"}, "error"),
    ],
)
def test_transfer_outcome(value: dict[str, Any], expected: str) -> None:
    assert t("transfer_outcome", value) == expected


def test_transfer_outcome_rejects_bad_status() -> None:
    for bad in ({"status": "ringing"}, "answered", None):
        with pytest.raises(TransformError):
            t("transfer_outcome", bad)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(name=st.sampled_from(sorted(TRANSFORMS)), value=_json)
def test_transforms_only_raise_transform_error(name: str, value: Any) -> None:
    with contextlib.suppress(TransformError):
        TRANSFORMS[name](value)
