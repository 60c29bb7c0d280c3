from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jambonz_sdk
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import VoiceGatewayProtocolError
from bridge.mapping import load_mappings
from bridge.voicegateway.verbs import hook_name, normalize_verb, normalize_verbs
from bridge.voicegateway.wire import UNSERVED_HOOK_RESULTS
from tests.jambonz_schema import validate_app


def test_verb_form_is_kept() -> None:
    verb = {"verb": "say", "text": "Hello", "synthesizer": {"vendor": "microsoft"}}
    assert normalize_verb(verb) == verb


def test_keyed_form_becomes_verb_form() -> None:
    assert normalize_verb({"gather": {"input": ["speech"], "actionHook": "voice"}}) == {
        "verb": "gather",
        "input": ["speech"],
        "actionHook": "voice",
    }


def test_keyed_form_without_properties() -> None:
    assert normalize_verb({"hangup": {}}) == {"verb": "hangup"}


def test_normalized_verb_is_a_copy() -> None:
    original: dict[str, Any] = {"say": {"text": ["a", "b"]}}
    normalized = normalize_verb(original)
    normalized["text"].append("c")
    assert original == {"say": {"text": ["a", "b"]}}


def test_stream_alias_is_listen() -> None:
    assert normalize_verb({"stream": {"url": "wss://x"}}) == {"verb": "listen", "url": "wss://x"}
    assert normalize_verb({"verb": "stream", "url": "wss://x"})["verb"] == "listen"


def test_s2s_alias_injects_vendor_unless_set() -> None:
    assert normalize_verb({"openai_s2s": {"model": "m"}}) == {
        "verb": "llm",
        "vendor": "openai",
        "model": "m",
    }
    assert normalize_verb({"verb": "google_s2s", "vendor": "x"})["vendor"] == "x"


def test_floats_are_tolerated_and_not_coerced() -> None:
    verb = normalize_verb({"gather": {"timeout": 10.0, "numDigits": 4.0}})
    assert verb["timeout"] == 10.0
    assert isinstance(verb["timeout"], float)
    assert isinstance(verb["numDigits"], float)


def test_unknown_verb_names_pass_through() -> None:
    assert normalize_verb({"verb": "transfer"}) == {"verb": "transfer"}


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ("say", "must be an object"),
        (["say"], "must be an object"),
        (None, "must be an object"),
        ({}, "missing verb property"),
        ({"text": "hi", "loop": 2}, "missing verb property"),
        ({"verb": ""}, "non-empty string"),
        ({"verb": 3}, "non-empty string"),
        ({"say": "hello"}, "must be an object"),
        ({"say": {"verb": "play"}}, "must not carry a verb"),
    ],
)
def test_non_verbs_are_rejected_with_a_reason(obj: object, reason: str) -> None:
    with pytest.raises(VoiceGatewayProtocolError, match=reason):
        normalize_verb(obj)


def test_normalize_verbs_mixed_forms_in_order() -> None:
    verbs = normalize_verbs(
        [
            {"config": {"notifyEvents": True}},
            {"verb": "say", "text": "Hi"},
            {"gather": {"input": ["speech", "digits"], "actionHook": "voice", "timeout": 8.0}},
        ]
    )
    assert [v["verb"] for v in verbs] == ["config", "say", "gather"]
    assert validate_app(verbs) == []


def test_normalize_verbs_requires_an_array() -> None:
    with pytest.raises(VoiceGatewayProtocolError, match="must be array"):
        normalize_verbs({"verb": "say"})


def test_normalize_verbs_names_the_bad_index() -> None:
    with pytest.raises(VoiceGatewayProtocolError, match="verb #1"):
        normalize_verbs([{"verb": "say", "text": "a"}, 42])


def test_normalize_verbs_empty_array_is_empty() -> None:
    assert normalize_verbs([]) == []


def test_hook_name() -> None:
    assert hook_name("voice") == "voice"
    assert hook_name({"url": "wss://h/x", "method": "POST"}) == "wss://h/x"
    assert hook_name("") is None
    assert hook_name({"method": "GET"}) is None
    assert hook_name(None) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_normalize_verb_returns_verb_form_or_raises_protocol_error(obj: object) -> None:
    try:
        verb = normalize_verb(obj)
    except VoiceGatewayProtocolError:
        return
    assert isinstance(verb["verb"], str)
    assert verb["verb"]


# ---- mappings/README.md "Verb fates": one decided fate for every verb the schemas know ----

_README = Path(__file__).parent.parent / "mappings" / "README.md"
_SCHEMA_VERB_DIRS = {
    "jambonz-python-sdk": Path(jambonz_sdk.__file__).parent / "schema" / "verbs",
    "@jambonz/schema": Path(__file__).parent / "peers/node_modules/@jambonz/schema/verbs",
}


@dataclass(frozen=True)
class _FateRow:
    verbs: tuple[str, ...]  # the canonical verb first, then aliases named in the same row
    fate: str
    files: tuple[str, ...]


def _fate_rows() -> list[_FateRow]:
    text = _README.read_text(encoding="utf-8")
    section = text.split("## Verb fates", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        verbs = tuple(re.findall(r"`([^`]+)`", cells[0]))
        files = tuple(re.findall(r"`([a-z0-9_]+\.yaml)`", cells[2]))
        rows.append(_FateRow(verbs, cells[1], files))
    return rows


def _schema_verbs(source: str) -> set[str]:
    directory = _SCHEMA_VERB_DIRS[source]
    files = sorted(directory.glob("*.schema.json"))
    assert files, f"no verb schemas under {directory} (run `make peers`)"
    return {json.loads(f.read_text(encoding="utf-8"))["$id"].rsplit("/", 1)[1] for f in files}


@pytest.mark.parametrize("source", sorted(_SCHEMA_VERB_DIRS))
def test_every_schema_verb_has_a_decided_fate(source: str) -> None:
    listed = {verb for row in _fate_rows() for verb in row.verbs}
    missing = sorted(_schema_verbs(source) - listed)
    assert not missing, f"verbs of {source} with no row in mappings/README.md: {missing}"


def test_fate_rows_agree_with_the_mappings_and_the_protocol() -> None:
    mapped: dict[str, set[str]] = {}
    for mapping in load_mappings():
        if mapping.verb is not None:
            mapped.setdefault(mapping.verb, set()).add(Path(mapping.file).name)
    rows = _fate_rows()
    assert len({row.verbs[0] for row in rows}) == len(rows), "a verb has two rows"
    for row in rows:
        canonical = row.verbs[0]
        for alias in row.verbs:
            assert normalize_verb({"verb": alias})["verb"] == canonical, (alias, canonical)
        assert set(row.files) == mapped.get(canonical, set()), canonical
        assert row.fate.split(",")[0] in FATES, (canonical, row.fate)
        if row.fate.startswith("translated") or row.fate.startswith("Voice Gateway only"):
            assert row.files or canonical == "tag", f"{canonical}: no mapping file"
        else:
            assert not row.files, f"{canonical}: unmapped, yet a mapping file serves it"
        if row.fate.endswith("reports failure"):
            assert canonical in UNSERVED_HOOK_RESULTS, canonical
        elif canonical in UNSERVED_HOOK_RESULTS:  # partly served: the row says what the rest gets
            assert row.fate == "translated" and '"failed"' in line_of(canonical), canonical
    assert set(mapped) <= {row.verbs[0] for row in rows}


FATES = ("translated", "Voice Gateway only", "no AudioCodes equivalent")


def line_of(verb: str) -> str:
    text = _README.read_text(encoding="utf-8")
    return next(line for line in text.splitlines() if line.startswith(f"| `{verb}` |"))
