"""Golden cases: every `tests/golden/<node>/<case>.json` through the shipped mappings.

A case is `{"input", "context", "expected"}` plus optional `"result"` (default `ok`),
`"error_contains"` and `"message"` (to_voicegateway kind). Every mapping file must have a folder
with at least one case. to_voicegateway outputs are also checked against the jambonz callback
schemas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.mapping import Direction, Engine, MappingSet, Translation, load_mappings
from tests.jambonz_schema import validate_callback

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*/*.json"))

_MAPPINGS = load_mappings()
_ENGINE = Engine(_MAPPINGS)


def _callback_schema(message: str, context: dict[str, Any]) -> str:
    if message == "transfer":
        return "dial" if context.get("transfer_verb") == "dial" else "sip-refer"
    return {
        "session_new": "session-new",
        "input": "gather",
        "play": "play",
        "call_status": "call-status",
    }[message]


def _translate(node: str, mappings: MappingSet, case: dict[str, Any]) -> Translation:
    mapping = mappings.get(node)
    assert mapping is not None, f"golden folder {node!r} has no mapping file"
    if mapping.direction is Direction.TO_VOICEGATEWAY:
        return _ENGINE.activity_to_voicegateway(case["input"], case["context"])
    parts = _ENGINE.verb_to_activities(case["input"], case["context"])
    mine = [p for p in parts if p.node == node]
    assert len(mine) == 1, f"expected one part for node {node}, got {parts}"
    return mine[0]


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= len(_MAPPINGS)


def test_every_mapping_has_a_golden_case() -> None:
    missing = [n for n in _MAPPINGS.nodes if not list((GOLDEN / n).glob("*.json"))]
    assert not missing, f"mapping files without golden cases: {missing}"


def test_every_golden_folder_has_a_mapping() -> None:
    folders = {p.parent.name for p in CASES}
    assert folders <= set(_MAPPINGS.nodes), folders - set(_MAPPINGS.nodes)


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_case(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    assert set(case) <= {"input", "context", "expected", "result", "error_contains", "message"}
    node = path.parent.name
    translation = _translate(node, _MAPPINGS, case)
    assert translation.node == node
    assert translation.result == case.get("result", "ok"), translation.error
    assert list(translation.outputs) == case["expected"]
    if "error_contains" in case:
        assert translation.error is not None
        assert case["error_contains"] in translation.error
    if "message" in case:
        assert translation.message == case["message"]
    if translation.message is not None and translation.result == "ok":
        schema = _callback_schema(translation.message, case["context"])
        for output in translation.outputs:
            assert validate_callback(schema, output) == []
