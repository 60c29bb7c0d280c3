"""bridge/journal_reader.py: lines the writer wrote read back; every kind of bad line named by
file, line and reason; the reader and docs/journal.schema.json agree on what a line is."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.journal import CallRecord
from bridge.journal_reader import JournalError, read_journal

SCHEMA = json.loads((Path(__file__).parent.parent / "docs/journal.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def line() -> dict[str, Any]:
    call = CallRecord(
        route="support",
        path="legacy",
        mode="sync",
        transport="http",
        conversation_id="c-1",
        start={"caller": "+4915112345678", "callee": "+4930111001"},
        started_at=datetime(2030, 1, 2, tzinfo=UTC),
        default_region="DE",
    )
    start = {"type": "event", "name": "start", "parameters": call.start}
    call.turn(0.0, [start], [{"type": "message", "text": "Welcome."}])
    call.turn(1.5, [{"type": "event", "name": "DTMF", "value": "1"}], [])
    return call.finish(3.0, "client_disconnected")


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "j.jsonl"
    path.write_text("".join(f"{text}\n" for text in lines))
    return path


def test_a_written_line_reads_back(tmp_path: Path) -> None:
    stopped = {
        "version": "acvg-journal/1",
        "kind": "stopped",
        "reason": "max_bytes",
        "at": "2030-01-02T00:00:00Z",
        "max_bytes": 2048,
    }
    path = write(tmp_path, json.dumps(line()), "", json.dumps(stopped))
    entries, problems = read_journal(path)
    assert problems == []
    [entry] = entries
    assert entry.line == 1
    assert entry.call.route == "support" and len(entry.call.turns) == 2
    assert entry.call.turns[1].offset_ms == 1500
    assert entry.call.redaction.keep_digits == 2


BAD = [
    ("{oops", "not JSON"),
    ("[1, 2]", "not a JSON object but list"),
    (json.dumps(line() | {"version": "acvg-journal/2"}), "unknown version 'acvg-journal/2'"),
    (json.dumps(line() | {"kind": "note"}), "unknown kind 'note'"),
    (json.dumps(line() | {"mode": "fast"}), "mode: "),
    (json.dumps(line() | {"extra": 1}), "extra: Extra inputs are not permitted"),
    (json.dumps(line() | {"truncated": 0}), "truncated: "),
    (
        json.dumps(line() | {"turns": [{"offset_ms": -1, "inputs": [], "outputs": []}]}),
        "turns.0.offset_ms",
    ),
]


@pytest.mark.parametrize(("text", "reason"), BAD)
def test_bad_lines_are_named_by_file_line_and_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = write(tmp_path, json.dumps(line()), text)
    entries, problems = read_journal(path)
    assert len(entries) == 1
    [problem] = problems
    assert (problem.file, problem.line) == (str(path), 2)
    assert reason in problem.reason
    assert str(problem).startswith(f"{path}:2: ")
    with pytest.raises(JournalError, match=":2: "):
        read_journal(path, strict=True)


def test_decreasing_offsets_and_typeless_inputs_are_refused(tmp_path: Path) -> None:
    back = line()
    back["turns"][1]["offset_ms"] = 0
    back["turns"][0]["offset_ms"] = 10
    typeless = line()
    typeless["turns"][1]["inputs"] = [{"name": "DTMF"}]
    _, problems = read_journal(write(tmp_path, json.dumps(back), json.dumps(typeless)))
    assert [p.line for p in problems] == [1, 2]
    assert "before the previous turn" in problems[0].reason
    assert "string type" in problems[1].reason


def test_an_unreadable_file_is_a_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cannot read"):
        read_journal(tmp_path / "missing.jsonl")


MUTATIONS = st.sampled_from(
    [
        ("route", "bad route!"),
        ("path", "other"),
        ("transport", "sip"),
        ("started_at", "2030-01-02"),
        ("started_at", None),
        ("conversation", 5),
        ("end", {"offset_ms": 1, "reason": "Bad"}),
        ("end", {"offset_ms": 1, "reason": "ok"}),
        ("redaction", {"keep_digits": 2, "keep_numbers": ["0301234"]}),
        ("redaction", {"keep_digits": 2, "keep_numbers": ["+4930111001"]}),
        ("start", []),
        ("turns", [{"offset_ms": 0, "inputs": [{"type": 1}], "outputs": []}]),
    ]
)


@settings(max_examples=40, deadline=None)
@given(mutation=MUTATIONS)
def test_reader_and_schema_agree(tmp_path_factory: pytest.TempPathFactory, mutation: Any) -> None:
    key, value = mutation
    doc = line() | {key: value}
    path = tmp_path_factory.mktemp("agree") / "j.jsonl"
    path.write_text(json.dumps(doc) + "\n")
    entries, _ = read_journal(path)
    assert bool(entries) == VALIDATOR.is_valid(doc), (key, value)
