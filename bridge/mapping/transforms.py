"""The registry of named pure transforms that mapping files may apply to a value.

A transform takes one value and returns one value. Returning `None` means "no value": the field
it feeds is omitted. Bad input raises `TransformError` with a message that never quotes the value
(it may be a phone number or digits). String-only transforms pass non-strings through unchanged,
so they are safe as comparison normalisers. Performs no I/O.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

Transform = Callable[[Any], Any]


class TransformError(ValueError):
    """A transform cannot handle its input; the engine reports it as result `error`."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: object, name: str) -> float:
    number: float | None = None
    if _is_number(value):
        number = float(value)  # type: ignore[arg-type]
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    if number is not None and math.isfinite(number):
        return number
    raise TransformError(f"{name}: expected a finite number, got {type(value).__name__}")


def seconds_to_ms(value: Any) -> int:
    """Seconds (int, float or numeric string) → whole milliseconds."""
    return round(_number(value, "seconds_to_ms") * 1000)


def to_int(value: Any) -> int:
    """An integral number or numeric string → int."""
    number = _number(value, "int")
    if not number.is_integer():
        raise TransformError("int: expected a whole number")
    return int(number)


def to_float(value: Any) -> float:
    return _number(value, "float")


def to_str(value: Any) -> str:
    """A scalar → its string form (booleans as `true`/`false`, integral floats without `.0`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    raise TransformError(f"str: expected a scalar, got {type(value).__name__}")


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if _is_number(value) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise TransformError(f"bool: expected a boolean, got {type(value).__name__}")


def first(value: Any) -> Any:
    """A list → its first element (no value when empty); anything else unchanged."""
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return value


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def non_empty(value: Any) -> Any:
    """Empty string, list or object → no value."""
    if isinstance(value, str | list | tuple | dict) and not value:
        return None
    return value


def if_str(value: Any) -> str | None:
    """Keep strings only (e.g. a synthesizer voice may be an object): others → no value."""
    return value if isinstance(value, str) else None


def drop_default(value: Any) -> Any:
    """jambonz's `"default"` (use the application default) → no value."""
    return None if value == "default" else value


def lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


_WHITESPACE = re.compile(r"\s+")


def collapse_whitespace(value: Any) -> Any:
    """Runs of whitespace → one space; ends stripped."""
    return _WHITESPACE.sub(" ", value).strip() if isinstance(value, str) else value


_SPEAK = re.compile(r"^\s*<speak\b[^>]*>(.*)</speak>\s*$", re.DOTALL)
_VOICE = re.compile(r"^\s*<voice\b[^>]*>(.*)</voice>\s*$", re.DOTALL)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>", re.DOTALL)


def strip_ssml(value: Any) -> Any:
    """Remove an enclosing `<speak>` wrapper and a `<voice>` wrapper directly inside it.

    Cognigy wraps Say text in `<speak><voice name=…>…</voice></speak>`; inner markup stays.
    """
    if not isinstance(value, str):
        return value
    text = _XML_DECL.sub("", value, count=1)
    speak = _SPEAK.match(text)
    if speak is None:
        return value
    text = speak.group(1)
    voice = _VOICE.match(text)
    if voice is not None:
        text = voice.group(1)
    return text.strip()


_SEPARATORS = re.compile(r"[\s\-().]")


def tel_uri(value: Any) -> str:
    """A phone number → `tel:+<digits>`.

    `tel:` URIs pass through; visual separators are removed; a number of digits only gets a `+`
    (jambonz phone targets are E.164, sometimes written without the plus).
    """
    if not isinstance(value, str) or not value.strip():
        raise TransformError("tel_uri: expected a non-empty phone number")
    number = value.strip()
    if number.lower().startswith("tel:"):
        return "tel:" + number[4:]
    number = _SEPARATORS.sub("", number)
    if number.startswith("+") and number[1:].isdigit():
        return "tel:" + number
    if number.isdigit():
        return "tel:+" + number
    raise TransformError("tel_uri: not a phone number")


def dial_target(value: Any) -> str:
    """The first jambonz dial target → an AudioCodes `transferTarget` URI.

    phone → `tel:+…`; sip → its `sipUri`; user → `sip:<name>`. Other types cannot be expressed.
    """
    target = first(value)
    if not isinstance(target, Mapping):
        raise TransformError("dial_target: dial has no target")
    kind = target.get("type")
    if kind == "phone":
        number = target.get("number")
        if not isinstance(number, str) or not number.strip():
            raise TransformError("dial_target: phone target has no number")
        return tel_uri(number)
    if kind == "sip":
        uri = target.get("sipUri")
        if not isinstance(uri, str) or not uri.strip():
            raise TransformError("dial_target: sip target has no sipUri")
        return uri.strip()
    if kind == "user":
        name = target.get("name")
        if not isinstance(name, str) or not name.strip():
            raise TransformError("dial_target: user target has no name")
        name = name.strip()
        return name if name.startswith(("sip:", "sips:")) else "sip:" + name
    raise TransformError(f"dial_target: target type {kind!r} has no AudioCodes equivalent")


def headers_to_sip_list(value: Any) -> list[dict[str, str]] | None:
    """`{name: value}` SIP headers → `[{name, value}]` (AudioCodes `transferSipHeaders`).

    A list already in that shape passes through; no headers → no value.
    """
    if isinstance(value, Mapping):
        items = [{"name": str(k), "value": to_str(v)} for k, v in value.items() if v is not None]
        return items or None
    if isinstance(value, list):
        for item in value:
            if not (isinstance(item, Mapping) and "name" in item and "value" in item):
                raise TransformError("headers_to_sip_list: list items need name and value")
        return [{"name": str(i["name"]), "value": to_str(i["value"])} for i in value] or None
    raise TransformError(f"headers_to_sip_list: expected an object, got {type(value).__name__}")


def json_or_text(value: Any) -> Any:
    """A string holding a JSON object or array → parsed; any other string → itself.

    Values that are not strings (already parsed) pass through.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            return value
    return value


def phrases(value: Any) -> list[str] | None:
    """jambonz recognizer hints (strings or `{phrase, boost}` objects) → a list of phrases."""
    if not isinstance(value, list):
        raise TransformError(f"phrases: expected a list, got {type(value).__name__}")
    out: list[str] = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("phrase"), str):
            out.append(item["phrase"])
        else:
            raise TransformError("phrases: items must be strings or {phrase} objects")
    return out or None


def sip_headers_from_params(value: Any) -> dict[str, str]:
    """`[start parameters, {param name: SIP header name}]` → `{SIP header name: value}`.

    Parameters absent from the start event are skipped; values are stringified.
    """
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise TransformError("sip_headers_from_params: expected [parameters, header map]")
    params, header_map = value
    if not isinstance(params, Mapping) or not isinstance(header_map, Mapping):
        return {}
    headers: dict[str, str] = {}
    for param, header in header_map.items():
        item = params.get(param)
        if item is None or isinstance(item, dict | list):
            continue
        headers[str(header)] = to_str(item)
    return headers


_FAILURE_REASONS = frozenset({"no-answer", "busy", "declined", "error"})


def transfer_outcome(value: Any) -> str:
    """An AudioCodes `transferStatus` value → one word.

    `answered`, or for `failed` the `reasonCode` (`no-answer`, `busy`, `declined`, `error`);
    an unknown or missing reason code → `error`.
    """
    if not isinstance(value, Mapping):
        raise TransformError("transfer_outcome: transferStatus value must be an object")
    status = value.get("status")
    if status == "answered":
        return "answered"
    if status != "failed":
        raise TransformError("transfer_outcome: status must be answered or failed")
    reason = value.get("reasonCode")
    return reason if isinstance(reason, str) and reason in _FAILURE_REASONS else "error"


# Several TTS engines cap one SSML <break> (Azure at 5 s); longer pauses are consecutive breaks.
_BREAK_MAX_MS = 5000
_PAUSE_MAX_MS = 600_000


def ssml_break(value: Any) -> str | None:
    """A pause in seconds → SSML of that much silence (`<speak><break time="1500ms"/></speak>`);
    breaks of at most 5 s each; a zero pause → no value; longer than 10 minutes is an error."""
    ms = seconds_to_ms(value)
    if not 0 <= ms <= _PAUSE_MAX_MS:
        raise TransformError("ssml_break: a pause is 0 to 600 seconds")
    if ms == 0:
        return None
    full, rest = divmod(ms, _BREAK_MAX_MS)
    parts = [_BREAK_MAX_MS] * full + ([rest] if rest else [])
    return "<speak>" + "".join(f'<break time="{p}ms"/>' for p in parts) + "</speak>"


TRANSFORMS: Mapping[str, Transform] = {
    "as_list": as_list,
    "bool": to_bool,
    "collapse_whitespace": collapse_whitespace,
    "dial_target": dial_target,
    "drop_default": drop_default,
    "first": first,
    "float": to_float,
    "headers_to_sip_list": headers_to_sip_list,
    "if_str": if_str,
    "int": to_int,
    "json_or_text": json_or_text,
    "lower": lower,
    "non_empty": non_empty,
    "phrases": phrases,
    "seconds_to_ms": seconds_to_ms,
    "sip_headers_from_params": sip_headers_from_params,
    "ssml_break": ssml_break,
    "str": to_str,
    "strip": strip,
    "strip_ssml": strip_ssml,
    "tel_uri": tel_uri,
    "transfer_outcome": transfer_outcome,
    "upper": upper,
}
