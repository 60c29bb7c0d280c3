from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.numbers import NumberInfo, number_metadata, redact

DE_META = {
    "number": "+4921154591991",
    "country": "DE",
    "countryCallingCode": "49",
    "nationalNumber": "21154591991",
    "valid": True,
    "type": "FIXED_LINE",
    "uri": "tel:+4921154591991",
}


def test_e164_german_fixed_line() -> None:
    info = number_metadata("+4921154591991", None)
    assert info == NumberInfo(e164="+4921154591991", metadata=DE_META, result="parsed")
    assert "ext" not in (info.metadata or {})


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("004921154591991", None),
        ("004921154591991", "DE"),
        ("0211 54591991", "DE"),
        ("0211 54591991", "de"),
        ("0211/545 919-91", "DE"),
        ("+49 (0)211 54591991", None),
        ("tel:+4921154591991", None),
        ("sip:+4921154591991@sbc.example.com", None),
        ("sip:%2B4921154591991@sbc.example.com;user=phone", "US"),
        ("SIPS:+4921154591991@sbc.example.com:5061", None),
        ("  +4921154591991  ", None),
    ],
)
def test_other_notations_of_the_same_number(raw: str, region: str | None) -> None:
    info = number_metadata(raw, region)
    assert info.result == "parsed"
    assert info.e164 == "+4921154591991"
    assert info.metadata == DE_META


def test_us_toll_free() -> None:
    info = number_metadata("+18002752273", None)
    assert info.metadata is not None
    assert info.metadata["type"] == "TOLL_FREE"
    assert info.metadata["country"] == "US"
    assert info.metadata["countryCallingCode"] == "1"
    assert info.metadata["valid"] is True


def test_uk_mobile() -> None:
    info = number_metadata("+447911123456", None)
    assert info.e164 == "+447911123456"
    assert info.metadata is not None
    assert info.metadata["type"] == "MOBILE"
    assert info.metadata["countryCallingCode"] == "44"
    assert info.metadata["nationalNumber"] == "7911123456"
    assert info.metadata["uri"] == "tel:+447911123456"


def test_national_number_needs_the_default_region() -> None:
    us = number_metadata("(650) 253-0000", "US")
    assert us.e164 == "+16502530000"
    assert us.metadata is not None
    assert us.metadata["country"] == "US"
    assert number_metadata("(650) 253-0000", None).result == "unparsable"
    assert number_metadata("0211 54591991", None).result == "unparsable"


@pytest.mark.parametrize(
    "raw",
    [
        "+1 650 253 0000 ext. 123",
        "+16502530000;ext=123",
        "tel:+1-650-253-0000;ext=123",
        "+1 650 253 0000 x123",
        "sip:+16502530000;ext=123@pbx.example.com",
    ],
)
def test_extension(raw: str) -> None:
    info = number_metadata(raw, None)
    assert info.e164 == "+16502530000"
    assert info.metadata is not None
    assert info.metadata["ext"] == "123"
    assert info.metadata["uri"] == "tel:+16502530000"


def test_leading_zero_of_italian_numbers_is_kept() -> None:
    info = number_metadata("+39 06 1234 5678", None)
    assert info.metadata is not None
    assert info.metadata["nationalNumber"] == "0612345678"
    assert info.e164 == "+390612345678"


def test_non_geographic_number_has_no_country() -> None:
    info = number_metadata("+80012345678", None)
    assert info.metadata is not None
    assert "country" not in info.metadata
    assert info.metadata["type"] == "TOLL_FREE"


def test_invalid_but_possible_number_is_parsed_without_type() -> None:
    info = number_metadata("+447700900123", None)
    assert info.result == "parsed"
    assert info.metadata is not None
    assert info.metadata["valid"] is False
    assert "type" not in info.metadata


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        "anonymous",
        "Anonymous",
        "restricted",
        "unavailable",
        "garbage",
        "+",
        "0211 54591991xyz",
        "call 0211 54591991",
        "+1234",
        "123",
        "sip:anonymous@anonymous.invalid",
        "+4921154591991;ext=abc",
        "+" + "1" * 200,
    ],
)
def test_unparsable(raw: str | None) -> None:
    info = number_metadata(raw, "US")
    assert info == NumberInfo(e164=None, metadata=None, result="unparsable")


@given(st.text(max_size=60), st.sampled_from([None, "DE", "US", "GB", "XX"]))
def test_never_raises(raw: str, region: str | None) -> None:
    info = number_metadata(raw, region)
    assert (info.e164 is None) == (info.metadata is None) == (info.result == "unparsable")
    if info.metadata is not None:
        assert info.metadata["number"] == info.e164
        assert info.metadata["uri"] == f"tel:{info.e164}"


def test_redact() -> None:
    assert redact("caller +4921154591991 hung up") == "caller +<redacted> hung up"
    assert redact("from +1 (650) 253-0000") == "from +<redacted>"
    assert redact("turn 12 of 3 calls") == "turn 12 of 3 calls"
    assert redact("no digits here") == "no digits here"
    assert "591" not in redact('{"caller": "0211 54591991", "x": "1234"}')
