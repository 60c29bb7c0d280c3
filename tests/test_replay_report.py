"""bridge/replay_report.py: the per-turn match rate (a call that failed counts all its turns as
not matched), the per-node table with its differing fields and recorded/replayed values, the
terminal lines and the live progress line."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from bridge.compare import compare_turn
from bridge.journal_reader import Problem, RecordedCall
from bridge.mapping import load_mappings
from bridge.replay import ReplayedCall, ReplayedTurn
from bridge.replay_report import Progress, ReportMeta, build_report, node_table

MAPPINGS = load_mappings(None)


def say(text: str) -> dict[str, Any]:
    return {"type": "message", "text": text}


def recorded(*outputs: list[dict[str, Any]]) -> RecordedCall:
    return RecordedCall.model_validate(
        {
            "version": "acvg-journal/1",
            "kind": "call",
            "route": "support",
            "path": "legacy",
            "mode": "sync",
            "transport": "http",
            "conversation": "c",
            "started_at": None,
            "start": {},
            "turns": [
                {"offset_ms": i * 1000, "inputs": [{"type": "event"}], "outputs": out}
                for i, out in enumerate(outputs)
            ],
            "end": {"offset_ms": 9000, "reason": "client_disconnected"},
            "truncated": False,
            "redaction": {"keep_digits": 2},
        }
    )


def replayed(line: int, call: RecordedCall, *outputs: list[dict[str, Any]]) -> ReplayedCall:
    result = ReplayedCall(line, call)
    for i, out in enumerate(outputs):
        turn = ReplayedTurn(i, call.turns[i].offset_ms, out, 0.002 * (i + 1))
        turn.comparison = compare_turn(call.turns[i].outputs, out, MAPPINGS, primary_path="legacy")
        result.turns.append(turn)
    return result


META = ReportMeta(
    "j.jsonl", "support", "voicegateway", 0.0, 4, 0.5, datetime(2030, 1, 1, tzinfo=UTC), 1.25
)


def report() -> dict[str, Any]:
    same = recorded([say("Hi")], [say("Bye")])
    other = recorded([say("Hi")], [say("Bye")])
    broken = recorded([say("Hi")], [say("Bye")], [say("Later")])
    failed = ReplayedCall(3, broken, error="create answered 503 over_capacity")
    results = [
        replayed(1, same, [say("Hi")], [say("Bye")]),
        replayed(2, other, [say("Hi")], [say("Ciao")]),
        failed,
    ]
    return build_report(results, [Problem("j.jsonl", 4, "not JSON")], META)


def test_summary_counts_turns_and_errors() -> None:
    summary = report()["summary"]
    assert summary["calls"] == 3 and summary["replayed"] == 2 and summary["errors"] == 1
    assert summary["turns"] == 7 and summary["turns_matched"] == 3
    assert summary["match_rate"] == 3 / 7
    assert summary["passed"] is False  # 0.43 < 0.5
    assert summary["problems"] == 1


def test_nodes_fields_and_diverged_turn_details() -> None:
    data = report()
    [say_row] = data["nodes"]
    assert say_row["node"] == "say"
    assert (say_row["activities"], say_row["match"], say_row["mismatch"]) == (4, 3, 1)
    assert say_row["fields"] == {"text": 1}
    calls = {c["line"]: c for c in data["calls"]}
    assert [c["status"] for c in data["calls"]] == ["match", "diverged", "error"]
    turn = calls[2]["turns"][1]
    assert turn["diverged"] is True and turn["latency_ms"] == 4.0
    [activity] = turn["activities"]
    assert activity["diffs"] == [
        {"path": "text", "kind": "value", "recorded": "Bye", "replayed": "Ciao"}
    ]
    assert calls[1]["turns"][0]["activities"] == []  # matching turns carry no details
    assert calls[3]["error"] == "create answered 503 over_capacity"
    assert data["latency"]["voicegateway"]["turns"] == 4


def test_terminal_table() -> None:
    text = "\n".join(node_table(report()))
    assert "say" in text and "(text)" in text
    assert "3/7 turns match (42.8 %)" in text
    assert "error: line 3: create answered 503 over_capacity" in text
    assert "bad line: j.jsonl:4: not JSON" in text
    assert text.rstrip().splitlines()[-1].startswith("FAIL")


def test_progress_is_silent_off_a_terminal_and_counts_on_one() -> None:
    quiet = io.StringIO()
    progress = Progress(2, quiet)
    call = recorded([say("Hi")])
    progress(replayed(1, call, [say("Hi")]))
    progress.close()
    assert quiet.getvalue() == ""
    assert "1/2 calls" in progress.line() and "match 100.0 %" in progress.line()

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    live = Tty()
    shown = Progress(1, live)
    shown(replayed(1, call, [say("Hello")]))
    shown.close()
    assert "\r[" in live.getvalue() and "1/1 calls" in live.getvalue()
    assert "match 0.0 %" in live.getvalue()
