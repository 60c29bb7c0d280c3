"""Derive Cognigy's `numberMetaData` from a caller number, and redact numbers for logs.

Pure: no I/O. The object mirrors what Cognigy's endpoints expose to flows
(design.md §3.3, audiocodes-bot-api.md §4.2): the fields of libphonenumber-js's
`parsePhoneNumber` result, computed here with `phonenumbers`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

__all__ = ["NumberInfo", "number_metadata", "redact"]

# Longer inputs are not phone numbers; also keeps parsing cost bounded.
_MAX_INPUT = 100

# Only dialable characters plus an optional textual extension. phonenumbers itself would
# accept letters (vanity numbers, "abc0211..."), which a SIP caller id never means.
_PLAIN = re.compile(
    r"\+?[\d\s\-.()/]*\d[\d\s\-.()/]*"
    r"(?:\s*(?:ext\.?|extension|x|\#)\s*\d{1,10})?",
    re.IGNORECASE,
)
_EXT = re.compile(r"\d{1,10}")

_TYPE_NAMES: dict[int, str] = {
    PhoneNumberType.PREMIUM_RATE: "PREMIUM_RATE",
    PhoneNumberType.TOLL_FREE: "TOLL_FREE",
    PhoneNumberType.SHARED_COST: "SHARED_COST",
    PhoneNumberType.VOIP: "VOIP",
    PhoneNumberType.PERSONAL_NUMBER: "PERSONAL_NUMBER",
    PhoneNumberType.PAGER: "PAGER",
    PhoneNumberType.UAN: "UAN",
    PhoneNumberType.VOICEMAIL: "VOICEMAIL",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "FIXED_LINE_OR_MOBILE",
    PhoneNumberType.FIXED_LINE: "FIXED_LINE",
    PhoneNumberType.MOBILE: "MOBILE",
}

# A digit run with at most two separator characters between digits, at least 3 digits long.
_DIGIT_RUN = re.compile(r"\d(?:[\s\-.()/]{0,2}\d){2,}")
REDACTED = "<redacted>"


@dataclass(frozen=True)
class NumberInfo:
    """The outcome for one caller string.

    `e164` and `metadata` are None exactly when `result` is "unparsable"; the caller string is
    then passed through unchanged by the session.
    """

    e164: str | None
    metadata: dict[str, object] | None
    result: Literal["parsed", "unparsable"]


_UNPARSABLE = NumberInfo(e164=None, metadata=None, result="unparsable")


def _candidate(raw: str) -> str | None:
    """The number text inside `raw` (tel:/sip: URIs unwrapped, `;ext=` kept), or None."""
    text = raw.strip()
    if not text or len(text) > _MAX_INPUT:
        return None
    lower = text[:5].lower()
    if lower.startswith(("sip:", "sips:")):
        text = unquote(text.split(":", 1)[1].split("@", 1)[0])
    elif lower.startswith("tel:"):
        text = text[4:]
    number, *params = text.split(";")
    ext: str | None = None
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "ext":
            ext = value.strip()
            if not _EXT.fullmatch(ext):
                return None
    number = number.strip()
    if not _PLAIN.fullmatch(number):
        return None
    return number if ext is None else f"{number};ext={ext}"


def number_metadata(raw: str | None, default_region: str | None) -> NumberInfo:
    """Parse a caller number into E.164 and Cognigy's `numberMetaData` object.

    Accepts E.164 (`+49...`), `00`-prefixed international numbers, national numbers (resolved
    with `default_region`, ISO alpha-2), `tel:` and `sip:` URIs (the user part) and extensions
    (`ext. 123`, `;ext=123`). `anonymous`, `restricted`, empty or anything else that is not a
    number gives `result="unparsable"`. A number of a possible length that is not valid for its
    country is "parsed" with `valid: False`; an impossible length is unparsable. `type` is
    omitted when unknown, `country` when the number belongs to no single region (e.g. +800),
    `ext` when there is none.
    """
    if raw is None:
        return _UNPARSABLE
    text = _candidate(raw)
    if text is None:
        return _UNPARSABLE
    region = default_region.upper() if default_region else None
    if region is None and text.startswith("00"):
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, region)
    except NumberParseException:
        return _UNPARSABLE
    # A length no number of that country can have is not a caller number (often a PBX
    # extension); it passes through unchanged rather than being rewritten to E.164.
    if not phonenumbers.is_possible_number(parsed):
        return _UNPARSABLE
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    metadata: dict[str, object] = {"number": e164}
    country = phonenumbers.region_code_for_number(parsed)
    if country and country not in ("001", "ZZ"):
        metadata["country"] = country
    metadata["countryCallingCode"] = str(parsed.country_code)
    metadata["nationalNumber"] = phonenumbers.national_significant_number(parsed)
    metadata["valid"] = phonenumbers.is_valid_number(parsed)
    type_name = _TYPE_NAMES.get(phonenumbers.number_type(parsed))
    if type_name is not None:
        metadata["type"] = type_name
    metadata["uri"] = f"tel:{e164}"
    if parsed.extension:
        metadata["ext"] = parsed.extension
    return NumberInfo(e164=e164, metadata=metadata, result="parsed")


def redact(text: str) -> str:
    """Replace every run of 3 or more digits (separators like spaces, `-`, `.`, `(`, `)`, `/`
    between them allowed) with `<redacted>`, for log lines and the divergence log.

    Shorter runs (a DTMF digit, a turn number) stay; callers must not log DTMF strings at all.
    """
    return _DIGIT_RUN.sub(REDACTED, text)
