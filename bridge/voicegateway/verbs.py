"""Normalize jambonz verbs to the `{"verb": name, ...}` form (voicegateway-ws.md §1.5).

Accepts both forms apps send (`{"verb": "say", "text": ...}` and keyed `{"say": {...}}`) and
applies feature-server's aliases (`stream` -> `listen`, `*_s2s` -> `llm` with `vendor`). It does
not validate verb properties nor coerce types (apps send floats such as `timeout: 10.0`): the
mapping layer decides what a verb means. Performs no I/O.
"""

from __future__ import annotations

import copy
from typing import Any

from bridge.errors import VoiceGatewayProtocolError

# alias -> (canonical verb, properties injected unless the verb sets them)
_ALIASES: dict[str, tuple[str, dict[str, str]]] = {
    "stream": ("listen", {}),
    "s2s": ("llm", {}),
    "openai_s2s": ("llm", {"vendor": "openai"}),
    "microsoft_s2s": ("llm", {"vendor": "microsoft"}),
    "google_s2s": ("llm", {"vendor": "google"}),
    "elevenlabs_s2s": ("llm", {"vendor": "elevenlabs"}),
    "deepgram_s2s": ("llm", {"vendor": "deepgram"}),
    "voiceagent_s2s": ("llm", {"vendor": "voiceagent"}),
    "ultravox_s2s": ("llm", {"vendor": "ultravox"}),
    "qwen_s2s": ("llm", {"vendor": "qwen"}),
    "gptlive_s2s": ("llm", {"vendor": "gptlive"}),
    "nova_s2s": ("llm", {"vendor": "nova"}),
    "voicelive_s2s": ("llm", {"vendor": "voicelive"}),
}


def _canonical(name: str, props: dict[str, Any]) -> dict[str, Any]:
    canonical, injected = _ALIASES.get(name, (name, {}))
    return {"verb": canonical, **injected, **props}


def normalize_verb(obj: object) -> dict[str, Any]:
    """One verb in either form -> a new `{"verb": name, ...}` dict (deep copy of the input).

    Raises VoiceGatewayProtocolError naming the problem when `obj` is not a verb.
    """
    if not isinstance(obj, dict):
        raise VoiceGatewayProtocolError(
            f"malformed jambonz payload: verb must be an object, got {type(obj).__name__}"
        )
    if "verb" in obj:
        name = obj["verb"]
        if not isinstance(name, str) or not name:
            raise VoiceGatewayProtocolError(
                "malformed jambonz payload: verb property must be a non-empty string"
            )
        props = {k: copy.deepcopy(v) for k, v in obj.items() if k != "verb"}
        return _canonical(name, props)
    if len(obj) == 1:
        ((name, body),) = obj.items()
        if not isinstance(name, str) or not name:
            raise VoiceGatewayProtocolError("malformed jambonz payload: empty verb name")
        if not isinstance(body, dict):
            raise VoiceGatewayProtocolError(
                f"malformed jambonz payload: properties of verb {name!r} must be an object"
            )
        if "verb" in body:
            raise VoiceGatewayProtocolError(
                f"malformed jambonz payload: keyed verb {name!r} must not carry a verb property"
            )
        return _canonical(name, copy.deepcopy(body))
    raise VoiceGatewayProtocolError("malformed jambonz payload: missing verb property")


def normalize_verbs(data: object) -> list[dict[str, Any]]:
    """A verb array (as in an `ack` or a `redirect` command) -> normalized verbs, in order."""
    if not isinstance(data, list):
        raise VoiceGatewayProtocolError("malformed jambonz payload: must be array")
    verbs: list[dict[str, Any]] = []
    for index, item in enumerate(data):
        try:
            verbs.append(normalize_verb(item))
        except VoiceGatewayProtocolError as exc:
            raise VoiceGatewayProtocolError(f"verb #{index}: {exc}") from exc
    return verbs


def hook_name(value: object) -> str | None:
    """The hook string of an `actionHook`-like property: a name/URL, or the `url` of an object."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        url = value.get("url")
        if isinstance(url, str) and url:
            return url
    return None
