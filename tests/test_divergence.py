"""divergence: redaction, sampling, JSON Lines, size cap, recent ring."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.compare import TurnComparison, compare_turn
from bridge.divergence import DivergenceLog, redact_activity
from bridge.mapping import load_mappings
from bridge.numbers import REDACTED, redact

MAPPINGS = load_mappings()
CALLER = "+4921154591991"
AT = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def event(name: str, **fields: Any) -> dict[str, Any]:
    return {"id": "e1", "timestamp": "t", "type": "event", "name": name, **fields}


def diverging_turn(text: str = "Hello") -> TurnComparison:
    primary = [
        {"type": "message", "text": f"You called from {CALLER}, say 4711"},
        event("transfer", activityParams={"transferTarget": f"tel:{CALLER}"}),
        event("sendDtmf", activityParams={"dtmfDigits": "4711"}),
        event("sendMetaData", value={"caller": CALLER, "pin": 4711, "n": 2}),
    ]
    shadow = [
        {"type": "message", "text": text},
        event("transfer", activityParams={"transferTarget": "tel:+4921154591992"}),
        event("sendDtmf", activityParams={"dtmfDigits": "1"}),
        event("sendMetaData", value=json.dumps({"caller": CALLER, "pin": 4711})),
        event("DTMF", value="4711"),
    ]
    return compare_turn(primary, shadow, MAPPINGS, primary_path="legacy", primary_latency_s=0.5)


def matching_turn() -> TurnComparison:
    turn = [{"type": "message", "text": "Hi"}]
    return compare_turn(turn, turn, MAPPINGS, primary_path="voicegateway")


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- redaction ------------------------------------------------------------------------------


def test_redact_activity_masks_numbers_and_digit_fields() -> None:
    redacted = redact_activity(
        {
            "type": "event",
            "name": "sendDtmf",
            "text": f"call {CALLER} now",
            "activityParams": {"dtmfDigits": "1", "userNoInputTimeoutMS": 5000, "x": 12345678},
            "value": {"pin": 4711, "n": 12, "ok": True, "list": [CALLER, 1.5], "digits": "9"},
        }
    )
    assert redacted == {
        "type": "event",
        "name": "sendDtmf",
        "text": f"call +{REDACTED} now",
        "activityParams": {"dtmfDigits": REDACTED, "userNoInputTimeoutMS": 5000, "x": REDACTED},
        "value": {
            "pin": REDACTED,
            "n": 12,
            "ok": True,
            "list": [f"+{REDACTED}", 1.5],
            "digits": REDACTED,
        },
    }


def test_redact_dtmf_event_value_whole() -> None:
    assert redact_activity({"type": "event", "name": "DTMF", "value": "1"})["value"] == REDACTED
    assert redact_activity({"type": "event", "name": "dtmf", "value": 7})["value"] == REDACTED


def test_redact_transfer_target_and_keys() -> None:
    redacted = redact_activity(
        {"activityParams": {"transferTarget": f"tel:{CALLER}"}, f"k{CALLER}": "v"}
    )
    assert CALLER not in json.dumps(redacted)
    assert redacted["activityParams"]["transferTarget"] == f"tel:+{REDACTED}"


def test_redact_does_not_modify_its_input() -> None:
    activity = {"text": CALLER, "activityParams": {"dtmfDigits": "12"}}
    redact_activity(activity)
    assert activity == {"text": CALLER, "activityParams": {"dtmfDigits": "12"}}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=15,
)


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [*value, *(leaf for v in value.values() for leaf in leaves(v))]
    if isinstance(value, list):
        return [leaf for v in value for leaf in leaves(v)]
    return [value]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), JSON, max_size=5) | JSON)
def test_redacted_activities_are_json_without_digit_runs(activity: Any) -> None:
    redacted = redact_activity(activity)
    json.dumps(redacted, allow_nan=False)
    for leaf in leaves(redacted):
        if isinstance(leaf, str):
            assert redact(leaf) == leaf  # no run of 3+ digits left
        elif isinstance(leaf, int | float) and not isinstance(leaf, bool):
            assert abs(leaf) < 10**6


# --- the log --------------------------------------------------------------------------------


def test_writes_one_redacted_json_line_per_diverged_turn(tmp_path: Path) -> None:
    path = tmp_path / "div.jsonl"
    log = DivergenceLog(path)
    assert log.record("support", "conv-1", 3, diverging_turn(), now=AT)
    assert not log.record("support", "conv-1", 4, matching_turn(), now=AT)
    log.close()
    raw = path.read_text(encoding="utf-8")
    assert CALLER not in raw and "4711" not in raw and "91991" not in raw
    (entry,) = lines(path)
    assert entry["time"] == "2030-01-02T03:04:05.678Z"
    assert (entry["route"], entry["conversation_id"], entry["turn"]) == ("support", "conv-1", 3)
    assert entry["primary_path"] == "legacy"
    assert entry["primary_latency_ms"] == 500 and entry["shadow_latency_ms"] is None
    results = [(i["node"], i["result"], i["fields"]) for i in entry["items"]]
    assert results == [
        ("say", "mismatch", ["text"]),
        ("transfer_dial", "mismatch", ["activityParams.transferTarget"]),
        ("dtmf", "mismatch", ["activityParams.dtmfDigits"]),
        ("send_metadata", "mismatch", ["value.n"]),
        ("unmapped", "extra", []),
    ]
    say = entry["items"][0]
    assert say["field_kinds"] == {"text": "value"}
    assert say["primary"]["text"] == f"You called from +{REDACTED}, say {REDACTED}"
    assert say["shadow"]["text"] == "Hello"
    assert entry["items"][4]["primary"] is None
    assert entry["items"][4]["shadow"]["value"] == REDACTED
    assert log.written == 1 and log.bytes_written == len(raw.encode())


def test_appends_to_an_existing_file_and_counts_its_size(tmp_path: Path) -> None:
    path = tmp_path / "div.jsonl"
    path.write_text('{"old":1}\n', encoding="utf-8")
    log = DivergenceLog(path)
    log.record("r", "c", 1, diverging_turn(), now=AT)
    log.close()
    assert sorted(lines(path)[0]) == ["old"]
    assert len(lines(path)) == 2


def test_lines_are_flushed_while_open(tmp_path: Path) -> None:
    path = tmp_path / "div.jsonl"
    log = DivergenceLog(path)
    log.record("r", "c", 1, diverging_turn(), now=AT)
    assert len(lines(path)) == 1
    log.close()


def test_sampling_is_deterministic_with_a_seeded_rng(tmp_path: Path) -> None:
    def run(seed: int) -> list[int]:
        log = DivergenceLog(None, sample_rate=0.3, rng=random.Random(seed))
        turn = diverging_turn()
        return [t for t in range(200) if log.record("r", "c", t, turn, now=AT)]

    taken = run(7)
    assert taken == run(7)
    assert 30 <= len(taken) <= 90  # about 60 of 200
    never = DivergenceLog(None, sample_rate=0.0, rng=random.Random(1))
    assert not any(never.record("r", "c", t, diverging_turn(), now=AT) for t in range(50))
    assert never.sampled_out == 50 and never.recent() == []


def test_matching_turns_do_not_consume_the_sample() -> None:
    rng = random.Random(3)
    log = DivergenceLog(None, sample_rate=0.5, rng=rng)
    state = rng.getstate()
    log.record("r", "c", 1, matching_turn(), now=AT)
    assert rng.getstate() == state


def test_stops_at_max_bytes_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "div.jsonl"
    log = DivergenceLog(path, max_bytes=4096)
    for t in range(50):
        log.record("r", "c", t, diverging_turn(), now=AT)
    log.close()
    assert path.stat().st_size <= 4096
    assert log.written == len(lines(path)) >= 1
    assert log.written + log.dropped == 50
    assert log.stopped
    assert len(log.recent(100)) == 50


def test_recent_ring_newest_first_and_bounded() -> None:
    log = DivergenceLog(None, recent_size=3)
    for t in range(5):
        log.record("r", "c", t, diverging_turn(), now=AT)
    assert [e["turn"] for e in log.recent()] == [4, 3, 2]
    assert [e["turn"] for e in log.recent(2)] == [4, 3]
    assert log.recent(0) == []
    assert CALLER not in json.dumps(log.recent())


def test_memory_only_log_never_touches_disk(tmp_path: Path) -> None:
    log = DivergenceLog(None)
    log.record("r", "c", 1, diverging_turn(), now=AT)
    log.close()
    assert list(tmp_path.iterdir()) == []
    assert not log.stopped and log.written == 0 and len(log.recent()) == 1


def test_malformed_activities_are_logged_as_json(tmp_path: Path) -> None:
    path = tmp_path / "div.jsonl"
    log = DivergenceLog(path)
    comparison = compare_turn(
        [{"type": "event", "name": "x", "value": float("nan")}],
        [None, ("a", 1234567)],
        MAPPINGS,
        primary_path="legacy",
    )
    assert log.record("r", "c", 1, comparison, now=AT)
    log.close()
    text = path.read_text(encoding="utf-8")
    json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert "1234567" not in text
