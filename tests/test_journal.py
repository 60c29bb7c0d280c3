"""journal: the acvg-journal/1 line and its schema, redaction (§3.9), sampling, the writer."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from pydantic import ValidationError

from bridge import journal, jsontext, routing
from bridge.journal import (
    MASK,
    VERSION,
    CallRecord,
    JournalSettings,
    JournalWriter,
    Redactor,
    sample,
)

SCHEMA = json.loads((Path(__file__).parent.parent / "docs/journal.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
CALLER = "+4915112345678"  # DE mobile
CALLEE = "+4930111008"  # DE fixed line


def nsn(number: str) -> str:
    return phonenumbers.national_significant_number(phonenumbers.parse(number))


def start_params(caller: object = CALLER, callee: object = CALLEE, **more: Any) -> dict[str, Any]:
    return {"caller": caller, "callee": callee, "callerDisplayName": "Max", **more}


def start_event(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "event", "name": "start", "id": "a0", "parameters": params}


def dtmf(digits: object, activity_id: str = "d") -> dict[str, Any]:
    return {"type": "event", "name": "DTMF", "id": activity_id, "value": digits}


def say(text: str) -> dict[str, Any]:
    return {"type": "message", "text": text}


def record(params: dict[str, Any] | None = None, **kwargs: Any) -> CallRecord:
    options: dict[str, Any] = {
        "route": "support",
        "path": "voicegateway",
        "mode": "sync",
        "transport": "http",
        "conversation_id": "conv-1",
        "start": start_params() if params is None else params,
        "started_at": AT,
        "default_region": "DE",
    }
    options.update(kwargs)
    return CallRecord(**options)


def demo_call(**kwargs: Any) -> CallRecord:
    """A call touching every part of the format: start, menu, a PIN, speech, outputs."""
    call = record(**kwargs)
    call.turn(0.0, [start_event(call.start)], [say("Welcome. Press 1 for billing.")])
    call.turn(2.5, [dtmf("1")], [say("Please enter your PIN.")])
    call.turn(4.0, [dtmf("4711")], [say("Thanks. What can I do for you?")])
    call.turn(
        7.25,
        [{"type": "message", "text": "call me back", "parameters": {"confidence": 0.9}}],
        [
            say(f"We will call you on {CALLER}."),
            {
                "type": "event",
                "name": "transfer",
                "activityParams": {"transferTarget": "tel:+4930111009"},
            },
        ],
    )
    return call


def line_of(obj: dict[str, Any]) -> str:
    return jsontext.dumps(obj)


def parse_with(number: str, region: str | None = "DE") -> phonenumbers.PhoneNumber:
    return phonenumbers.parse(number, region)


def same_shape(original: str, stand_in: str, region: str | None = "DE") -> bool:
    a, b = parse_with(original, region), parse_with(stand_in, region)
    return (
        a.country_code == b.country_code
        and phonenumbers.region_code_for_number(a) == phonenumbers.region_code_for_number(b)
        and phonenumbers.is_valid_number(a) == phonenumbers.is_valid_number(b)
        and phonenumbers.number_type(a) == phonenumbers.number_type(b)
    )


# ---- the line and its schema -------------------------------------------------------------------


def test_line_validates_against_the_schema() -> None:
    VALIDATOR.check_schema(SCHEMA)
    obj = demo_call().finish(9.0, "client_disconnected")
    VALIDATOR.validate(obj)
    assert json.loads(line_of(obj)) == obj  # one JSON Lines line: no newline inside
    assert "\n" not in line_of(obj)


def test_line_fields() -> None:
    obj = demo_call(mode="async", transport="ws", path="legacy").finish(9.0, "bot_disconnected")
    assert obj["version"] == VERSION == "acvg-journal/1"
    assert obj["kind"] == "call"
    assert (obj["route"], obj["path"], obj["mode"], obj["transport"]) == (
        "support",
        "legacy",
        "async",
        "ws",
    )
    assert obj["conversation"] == "conv-1"
    assert obj["started_at"] == "2030-01-02T03:04:05Z"
    assert [t["offset_ms"] for t in obj["turns"]] == [0, 2500, 4000, 7250]
    assert obj["end"] == {"offset_ms": 9000, "reason": "bot_disconnected"}
    assert obj["truncated"] is False
    assert obj["redaction"] == {"keep_digits": 2, "keep_numbers": []}
    assert obj["turns"][1]["inputs"] == [dtmf("1")]
    assert obj["turns"][0]["outputs"] == [say("Welcome. Press 1 for billing.")]
    assert obj["start"]["callerDisplayName"] == "Max"


def test_reason_outside_the_vocabulary_becomes_other() -> None:
    call = record()
    assert call.finish(1.0, "caller said 0151 1234")["end"]["reason"] == "other"
    assert call.finish(1.0, "expired")["end"]["reason"] == "expired"


def test_turns_beyond_max_turns_are_not_kept() -> None:
    call = record(max_turns=2)
    for i in range(4):
        call.turn(float(i), [dtmf("1")], [say("again")])
    obj = call.finish(5.0, "other")
    VALIDATOR.validate(obj)
    assert len(obj["turns"]) == 2
    assert obj["truncated"] is True


def test_offsets_are_whole_milliseconds_never_negative_nor_decreasing() -> None:
    call = record()
    call.turn(-0.5, [start_event(call.start)], [])
    call.turn(float("nan"), [dtmf("1")], [])
    call.turn(1.0004, [dtmf("2")], [])
    obj = call.finish(float("inf"), "other")
    VALIDATOR.validate(obj)
    assert [t["offset_ms"] for t in obj["turns"]] == [0, 0, 1000]
    assert obj["end"]["offset_ms"] == 1000


def test_the_documented_examples_are_valid_lines() -> None:
    doc = (Path(__file__).parent.parent / "docs/journal.md").read_text()
    examples = re.findall(r"```json\n(.*?)```", doc, re.S)
    assert len(examples) == 2
    for example in examples:
        VALIDATOR.validate(json.loads(example))


def test_schema_refuses_what_is_not_a_journal_line() -> None:
    good = demo_call().finish(9.0, "other")
    for bad in (
        {**good, "version": "acvg-journal/2"},
        {**good, "path": "elsewhere"},
        {key: value for key, value in good.items() if key != "turns"},
        {**good, "surprise": 1},
        {**good, "turns": [{"offset_ms": -1, "inputs": [], "outputs": []}]},
        {**good, "turns": [{"offset_ms": 0, "inputs": [{"text": "no type"}], "outputs": []}]},
        {"version": VERSION, "kind": "stopped"},
    ):
        assert not VALIDATOR.is_valid(bad), bad


def test_activities_are_copied_not_mutated() -> None:
    params = start_params()
    inputs = [start_event(params)]
    call = record(params)
    call.turn(0.0, inputs, [])
    call.finish(1.0, "other")
    assert params["caller"] == CALLER
    assert inputs[0]["parameters"]["caller"] == CALLER


# ---- redaction: numbers --------------------------------------------------------------------


def test_parties_replaced_in_every_form_and_place() -> None:
    national = "0151 1234 5678"
    params = start_params(
        callerDisplayName=f"Max {national}",
        participantUriUser=f"sip:{CALLER}@sbc.example.com",
    )
    call = record(params)
    call.turn(
        0.0,
        [start_event(params)],
        [
            say(f"You called from {CALLER} (tel:{CALLER}), alias 0049{CALLER[3:]}."),
            say(f"x{CALLER[1:]}y and {national.replace(' ', '/')} and {nsn(CALLEE)}"),
            {"type": "event", "name": "sendMetaData", "value": {"ani": int(CALLER[1:])}},
            {"type": "event", "name": "sendMetaData", "value": json.dumps({"to": CALLEE})},
            {"type": "event", "name": "x", "activityParams": {CALLER: "as a key"}},
        ],
    )
    obj = call.finish(1.0, "other")
    VALIDATOR.validate(obj)
    text = line_of(obj)
    for original in (CALLER, CALLEE):
        assert nsn(original) not in text
    caller, callee = obj["start"]["caller"], obj["start"]["callee"]
    assert caller.startswith("+49") and same_shape(CALLER, caller)
    assert callee.startswith("+49") and same_shape(CALLEE, callee)
    assert caller != CALLER and callee != CALLEE
    outputs = obj["turns"][0]["outputs"]
    assert f"You called from {caller} (tel:{caller})" in outputs[0]["text"]
    assert isinstance(outputs[2]["value"]["ani"], int)
    assert str(outputs[2]["value"]["ani"]) == caller[1:]
    assert json.loads(outputs[3]["value"]) == {"to": callee}
    assert obj["start"]["participantUriUser"] == f"sip:{caller}@sbc.example.com"


def test_national_form_keeps_its_form_and_gets_the_same_stand_in() -> None:
    redactor = Redactor()
    e164 = record().finish(1.0, "other", redactor=redactor)["start"]["caller"]
    national = record(start_params(caller="015112345678")).finish(1.0, "other", redactor=redactor)[
        "start"
    ]["caller"]
    assert national == "0" + e164[3:]


@pytest.mark.parametrize(
    ("number", "region"),
    [
        ("+4915112345678", None),  # DE mobile
        ("+4921154591991", None),  # DE fixed line
        ("+4980012345678", None),  # DE toll free
        ("+12025550143", None),  # US fixed line or mobile
        ("+14165550188", None),  # CA (same country code as US)
        ("+447911123456", None),  # GB mobile
        ("+33612345679", None),  # FR mobile
        ("+390212345679", None),  # IT fixed line, leading zero
        ("+41446681800", None),  # CH fixed line
        ("+80012345679", None),  # non-geographic freephone
        ("+493012", None),  # DE, possible but not valid
        ("02115459199", "DE"),  # national form
    ],
)
def test_stand_in_has_the_same_country_validity_and_type(number: str, region: str | None) -> None:
    call = record(start_params(caller=number, callee="anonymous"), default_region=region)
    obj = call.finish(1.0, "other")
    stand_in = obj["start"]["caller"]
    assert MASK not in stand_in
    assert nsn_of(number, region) not in line_of(obj)
    assert same_shape(number, stand_in, region)
    assert obj["start"]["callee"] == "anonymous"


def nsn_of(number: str, region: str | None) -> str:
    return phonenumbers.national_significant_number(phonenumbers.parse(number, region))


def test_redactor_stand_in_api() -> None:
    redactor = Redactor()
    original = phonenumbers.parse(CALLER)
    first = redactor.stand_in(original)
    assert first is not None and phonenumbers.is_valid_number(first)
    assert phonenumbers.number_type(first) == PhoneNumberType.MOBILE
    assert redactor.stand_in(original) == first
    assert len(redactor) == 1
    # a stand-in never contains a string the call masks: the old one is replaced from then on
    avoid = phonenumbers.national_significant_number(first)[-4:]
    second = redactor.stand_in(original, avoid=[avoid])
    assert second is not None and second != first
    assert avoid not in phonenumbers.national_significant_number(second)
    assert redactor.stand_in(original) == second


def test_stable_within_a_journal_distinct_per_number() -> None:
    redactor = Redactor()
    other = "+4915112345679"
    a1 = record().finish(1.0, "other", redactor=redactor)["start"]
    b = record(start_params(caller=other)).finish(1.0, "other", redactor=redactor)["start"]
    a2 = record().finish(1.0, "other", redactor=redactor)["start"]
    assert a1["caller"] == a2["caller"] and a1["callee"] == a2["callee"]
    assert b["caller"] != a1["caller"]
    assert b["callee"] == a1["callee"]


def test_the_mapping_belongs_to_one_journal() -> None:
    one, two = Redactor(), Redactor()
    other = "+4915112345679"
    seen_first = record().finish(1.0, "other", redactor=one)["start"]["caller"]
    record(start_params(caller=other)).finish(1.0, "other", redactor=two)
    seen_second = record().finish(1.0, "other", redactor=two)["start"]["caller"]
    # not a function of the number alone (which a dictionary of all numbers could invert)
    assert seen_first != seen_second
    assert same_shape(CALLER, seen_first) and same_shape(CALLER, seen_second)


def test_numbers_found_in_free_text() -> None:
    third = "+12025550143"
    call = record(start_params(callee="anonymous"))
    call.turn(
        0.0,
        [start_event(call.start), say(f"my other phone is {third} ok")],
        [
            say(f"Transferring to {third[:2]} 202-555-0143."),
            {"type": "event", "name": "transfer", "activityParams": {"transferTarget": third}},
        ],
    )
    obj = call.finish(1.0, "other")
    text = line_of(obj)
    assert nsn(third) not in text
    target = obj["turns"][0]["outputs"][1]["activityParams"]["transferTarget"]
    assert same_shape(third, target, None)
    assert target[1:] in obj["turns"][0]["inputs"][1]["text"].replace(" ", "").replace("+", "")


def test_anonymous_and_unparsable_parties() -> None:
    call = record(start_params(caller="anonymous", callee="4711"), default_region=None)
    call.turn(0.0, [start_event(call.start)], [say("Extension 4711 speaking")])
    obj = call.finish(1.0, "other")
    assert obj["start"]["caller"] == "anonymous"
    assert obj["start"]["callee"] == "XXXX"  # no number: its digits are masked
    assert "4711" not in line_of(obj)
    # with a region, 4711 is a possible (not valid) German number: an invalid German stand-in
    obj = record(start_params(callee="4711")).finish(1.0, "other")
    assert "4711" not in line_of(obj)
    assert same_shape("4711", obj["start"]["callee"])


def test_extension_digits_are_masked() -> None:
    obj = record(start_params(caller="+4921154591991;ext=4711")).finish(1.0, "other")
    caller = obj["start"]["caller"]
    assert "4711" not in line_of(obj)
    assert caller.endswith(";ext=XXXX")
    assert same_shape("+4921154591991", caller.split(";")[0])


# ---- redaction: digits ---------------------------------------------------------------------


def test_long_dtmf_masked_short_kept() -> None:
    obj = demo_call().finish(9.0, "other")
    assert obj["turns"][1]["inputs"][0]["value"] == "1"
    assert obj["turns"][2]["inputs"][0]["value"] == "XXXX"
    assert "4711" not in line_of(obj)


@pytest.mark.parametrize(
    ("keep", "menu", "pin"), [(0, "X", "XXXX"), (1, "1", "XXXX"), (4, "1", "4711")]
)
def test_keep_digits(keep: int, menu: str, pin: str) -> None:
    obj = demo_call(keep_digits=keep).finish(9.0, "other")
    assert obj["turns"][1]["inputs"][0]["value"] == menu
    assert obj["turns"][2]["inputs"][0]["value"] == pin
    assert obj["redaction"] == {"keep_digits": keep, "keep_numbers": []}


def test_digit_by_digit_dtmf_is_one_string() -> None:
    call = record()
    call.turn(0.0, [start_event(call.start)], [say("Press 1 or 2.")])
    call.turn(1.0, [dtmf("2")], [say("Enter your account number, then hash.")])
    for i, digit in enumerate("98765#"):  # VAIC's default: one event per digit, no answer
        call.turn(2.0 + i, [dtmf(digit, f"d{i}")], [])
    call.turn(9.0, [dtmf("3"), dtmf("4")], [say("Got 98765. Press 1 to confirm.")])
    call.turn(10.0, [dtmf("1")], [say("Done.")])
    obj = call.finish(11.0, "other")
    values = [t["inputs"][0]["value"] for t in obj["turns"][1:]]
    assert values == ["2", "X", "X", "X", "X", "X", "#", "X", "1"]
    assert obj["turns"][8]["inputs"][1]["value"] == "X"
    text = line_of(obj)
    assert "98765" not in text and "9876534" not in text
    assert "Got XXXXX." in obj["turns"][8]["outputs"][0]["text"]


def test_dtmf_fields_of_outputs_and_echoes_are_masked() -> None:
    call = record()
    call.turn(
        0.0,
        [start_event(call.start)],
        [
            {"type": "event", "name": "sendDtmf", "activityParams": {"dtmfDigits": "1234#"}},
            {"type": "event", "name": "sendDtmf", "activityParams": {"dtmfDigits": "9"}},
            say("Sent 12 34."),
        ],
    )
    obj = call.finish(1.0, "other")
    outputs = obj["turns"][0]["outputs"]
    assert outputs[0]["activityParams"]["dtmfDigits"] == "XXXX#"
    assert outputs[1]["activityParams"]["dtmfDigits"] == "9"
    assert outputs[2]["text"] == "Sent XX XX."
    assert "1234" not in line_of(obj)
    # the callee's stand-in (phonenumbers' DE example is +49 30 123456) avoids it too
    assert same_shape(CALLEE, obj["start"]["callee"])


def test_digits_the_caller_says_are_masked() -> None:
    call = record()
    call.turn(0.0, [start_event(call.start)], [])
    call.turn(
        1.0,
        [
            {
                "type": "message",
                "text": "my PIN is 4 7 1 1, call me on 0151 12345678, 2 kids",
                "parameters": {
                    "confidence": 0.4711,
                    "recognitions": [{"text": "my PIN is 4711", "confidence": 0.5}],
                },
            }
        ],
        [say("You said 4711?")],
    )
    obj = call.finish(4.711, "other")
    text = line_of(obj)
    assert "4711" not in text and "4 7 1 1" not in text and nsn(CALLER) not in text
    said = obj["turns"][1]["inputs"][0]
    assert said["text"].startswith("my PIN is X X X X, call me on 0")
    assert said["text"].endswith(", 2 kids")
    assert MASK not in said["text"].split("call me on ")[1].split(",")[0]
    assert said["parameters"]["recognitions"][0]["text"] == "my PIN is XXXX"
    assert obj["end"]["offset_ms"] != 4711  # moved by a millisecond, not showing the PIN


def test_timestamp_never_shows_a_masked_string() -> None:
    call = record(started_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    call.turn(0.0, [start_event(call.start), dtmf("2030")], [])
    obj = call.finish(1.0, "other")
    VALIDATOR.validate(obj)
    assert obj["started_at"] is None
    assert "2030" not in line_of(obj)
    call = record(started_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    call.turn(0.0, [start_event(call.start), dtmf("0405")], [])
    assert call.finish(1.0, "other")["started_at"] == "2030-01-02T03:04:06Z"


# ---- sampling ---------------------------------------------------------------------------------


def test_sample_is_stable_and_near_its_rate() -> None:
    ids = [f"conv-{i}" for i in range(20_000)]
    taken = [c for c in ids if sample(c, 0.25)]
    assert taken == [c for c in ids if sample(c, 0.25)]
    assert 0.23 < len(taken) / len(ids) < 0.27
    assert all(sample(c, 1.0) for c in ids[:100])
    assert not any(sample(c, 0.0) for c in ids[:100])
    # raising the rate keeps every call sampled before
    assert set(taken) <= {c for c in ids if sample(c, 0.5)}


def test_sample_is_independent_of_routing() -> None:
    ids = [f"conv-{i}" for i in range(20_000)]
    routed = {c for c in ids if routing.bucket("support", c) < 2500}
    taken = {c for c in ids if sample(c, 0.25)}
    both = len(routed & taken) / len(ids)
    assert 0.05 < both < 0.075  # ~ 0.25 * 0.25, not 0.25


# ---- settings ---------------------------------------------------------------------------------


def test_settings() -> None:
    settings_ = JournalSettings(path="/var/lib/acvg/journal.jsonl")
    assert (settings_.sample_rate, settings_.keep_digits, settings_.max_bytes) == (
        1.0,
        2,
        journal.DEFAULT_MAX_BYTES,
    )
    for bad in (
        {"path": ""},
        {"path": "j", "sample_rate": 1.5},
        {"path": "j", "keep_digits": -1},
        {"path": "j", "max_bytes": 10},
        {"path": "j", "rotate": True},
        {"sample_rate": 1.0},
    ):
        with pytest.raises(ValidationError):
            JournalSettings.model_validate(bad)


# ---- the writer -----------------------------------------------------------------------------


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_writer_file_mode_lines_and_close_flushes(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    old = os.umask(0)  # even a permissive umask gives 0600
    try:
        writer = JournalWriter(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    writer.start()
    for i in range(10):
        assert writer.submit(demo_call(conversation_id=f"c{i}"), 9.0, "client_disconnected")
    await writer.close()  # no await in between: close writes what was queued
    lines = read_lines(path)
    assert [line["conversation"] for line in lines] == [f"c{i}" for i in range(10)]
    for line in lines:
        VALIDATOR.validate(line)
    assert writer.written == 10 and writer.dropped == {}
    assert writer.bytes_written == path.stat().st_size
    # one journal, one mapping: every line has the same stand-in for the same caller
    assert len({line["start"]["caller"] for line in lines}) == 1
    assert CALLER[1:] not in path.read_text()


async def test_existing_file_is_made_0600_and_appended(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text("")
    path.chmod(0o644)
    async with JournalWriter(path) as writer:
        writer.submit(demo_call(), 9.0, "other")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    async with JournalWriter(path) as writer:
        writer.submit(demo_call(), 9.0, "other")
    assert len(read_lines(path)) == 2


async def test_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    drops: list[str] = []
    writer = JournalWriter(tmp_path / "j.jsonl", queue_size=3, on_drop=drops.append)
    calls = [demo_call(conversation_id=f"c{i}") for i in range(10)]
    began = time.perf_counter()
    accepted = [writer.submit(call, 9.0, "other") for call in calls]  # the task is not started
    assert time.perf_counter() - began < 0.05
    assert accepted == [True] * 3 + [False] * 7
    assert drops == ["queue_full"] * 7
    assert writer.dropped == {"queue_full": 7}
    writer.start()
    await writer.close()
    assert [line["conversation"] for line in read_lines(tmp_path / "j.jsonl")] == ["c0", "c1", "c2"]
    assert not writer.submit(calls[0], 9.0, "other")
    assert drops[-1] == "closed"


async def test_max_bytes_stops_the_file_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    size = len(line_of(demo_call().finish(9.0, "other"))) + 1
    max_bytes = 3 * size + 300
    drops: list[str] = []
    async with JournalWriter(path, max_bytes=max_bytes, on_drop=drops.append) as writer:
        for i in range(6):
            writer.submit(demo_call(conversation_id=f"c{i}"), 9.0, "other")
        await asyncio.sleep(0.2)
        assert writer.stopped
        assert not writer.submit(demo_call(), 9.0, "other")
    assert path.stat().st_size <= max_bytes
    lines = read_lines(path)
    for line in lines:
        VALIDATOR.validate(line)
    assert [line["kind"] for line in lines] == ["call"] * 3 + ["stopped"]
    assert lines[-1]["reason"] == "max_bytes" and lines[-1]["max_bytes"] == max_bytes
    assert writer.written == 3
    assert writer.dropped == {"max_bytes": 4} and drops == ["max_bytes"] * 4
    # after a restart the file's size still counts: nothing more is written, nor said twice
    async with JournalWriter(path, max_bytes=max_bytes) as writer:
        writer.submit(demo_call(), 9.0, "other")
    assert len(read_lines(path)) == 4
    assert writer.dropped == {"max_bytes": 1}
    # a larger cap resumes the file
    async with JournalWriter(path, max_bytes=2 * max_bytes) as writer:
        writer.submit(demo_call(conversation_id="more"), 9.0, "other")
    assert [line.get("conversation") for line in read_lines(path)][-2:] == [None, "more"]


async def test_write_error_stops_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal, "_write_all", broken)
    async with JournalWriter(tmp_path / "j.jsonl") as writer:
        assert writer.submit(demo_call(), 9.0, "other")
        await asyncio.sleep(0.1)
        assert writer.stopped
        assert not writer.submit(demo_call(), 9.0, "other")
    assert writer.dropped == {"write_error": 2}
    assert writer.written == 0


async def test_a_record_that_cannot_be_written_spares_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = demo_call(conversation_id="bad")

    def explode(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ValueError("boom")

    monkeypatch.setattr(bad, "finish", explode)

    def failing_counter(reason: str) -> None:
        raise RuntimeError("counter down")

    async with JournalWriter(tmp_path / "j.jsonl", on_drop=failing_counter) as writer:
        writer.submit(demo_call(conversation_id="a"), 9.0, "other")
        writer.submit(bad, 9.0, "other")
        writer.submit(demo_call(conversation_id="b"), 9.0, "other")
    assert [line["conversation"] for line in read_lines(tmp_path / "j.jsonl")] == ["a", "b"]
    assert writer.dropped == {"invalid": 1}


async def test_close_without_start_writes_what_was_queued(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path / "j.jsonl")
    writer.submit(demo_call(), 9.0, "other")
    await writer.close()
    await writer.close()
    assert len(read_lines(tmp_path / "j.jsonl")) == 1


def test_unwritable_path_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        JournalWriter(tmp_path / "missing-dir" / "j.jsonl")


def test_from_settings(tmp_path: Path) -> None:
    settings_ = JournalSettings(path=str(tmp_path / "j.jsonl"), max_bytes=4096)
    writer = JournalWriter.from_settings(settings_)
    assert writer.max_bytes == 4096 and writer.path == tmp_path / "j.jsonl"
    asyncio.run(writer.close())


# ---- property: no input number ever leaks -------------------------------------------------

_REGIONS = ["DE", "US", "GB", "FR", "IT", "CH", "AT", "ES", "NL", "SE", "PL", "AU", "JP", "IN"]
_KINDS = [PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.TOLL_FREE]
_FILLER = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "Zs"], exclude_characters="\x00").filter(
        lambda c: not c.isdigit()
    ),
    max_size=8,
)


@st.composite
def phone_numbers(draw: st.DrawFn) -> tuple[phonenumbers.PhoneNumber, str]:
    region = draw(st.sampled_from(_REGIONS))
    kind = draw(st.sampled_from(_KINDS))
    example = phonenumbers.example_number_for_type(region, kind)
    assume(example is not None)
    assert example is not None
    digits = phonenumbers.national_significant_number(example)
    tail = draw(st.integers(0, 9999))
    number = phonenumbers.parse(f"+{example.country_code}{digits[:-4]}{tail:04d}")
    assume(phonenumbers.is_valid_number(number))
    return number, region


def written_forms(number: phonenumbers.PhoneNumber) -> list[str]:
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return [
        e164,
        f"tel:{e164}",
        f"sip:{e164}@sbc.example.com",
        "00" + e164[1:],
        e164[1:],
        phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL),
        phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL),
        phonenumbers.national_significant_number(number),
    ]


def json_values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(["text", "value", "name", "parameters", "caller", "digits", "x"])
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(keys | _FILLER, inner, max_size=3)
        ),
        max_leaves=12,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_input_number_or_long_dtmf_ever_leaks(data: st.DataObject) -> None:
    (caller, caller_region) = data.draw(phone_numbers(), label="caller")
    (third, _) = data.draw(phone_numbers(), label="third party")
    pin = data.draw(st.text(alphabet="0123456789", min_size=3, max_size=8), label="pin")
    forms = written_forms(caller)
    embedded = st.builds(
        lambda before, form, after: f"{before}{form}{after}",
        _FILLER,
        st.sampled_from(forms),
        _FILLER,
    )
    third_text = phonenumbers.format_number(third, PhoneNumberFormat.INTERNATIONAL)
    leaves = (
        embedded
        | st.just(f"call {third_text} now")
        | _FILLER
        | st.integers(-99, 99)
        | st.booleans()
        | st.none()
        | st.sampled_from([int(forms[4])])
    )
    activity = st.fixed_dictionaries(
        {"type": st.sampled_from(["message", "event"])}, optional={"text": _FILLER}
    ).flatmap(
        lambda base: st.dictionaries(
            st.sampled_from(["text", "value", "parameters", "x"]), json_values(leaves), max_size=3
        ).map(lambda extra: {**extra, **base})
    )
    params = start_params(caller=data.draw(st.sampled_from(forms[:3]), label="form"))
    call = record(params, default_region=caller_region)
    call.turn(0.0, [start_event(params)], data.draw(st.lists(activity, max_size=3)))
    for i, digit in enumerate(pin):
        call.turn(1.0 + i, [dtmf(digit, f"p{i}")], [])
    call.turn(
        20.0,
        data.draw(st.lists(activity, min_size=1, max_size=3)),
        data.draw(st.lists(activity, max_size=3)),
    )
    obj = call.finish(30.0, "other")
    VALIDATOR.validate(obj)
    text = line_of(obj)
    for number in (caller, third):
        assert phonenumbers.national_significant_number(number) not in text
    assert pin not in text
    stand_in = obj["start"]["caller"]
    if MASK not in stand_in:  # masked only when no stand-in can avoid the PIN's digits
        parsed = phonenumbers.parse(
            stand_in.removeprefix("tel:").split("@")[0].removeprefix("sip:")
        )
        assert phonenumbers.number_type(parsed) == phonenumbers.number_type(caller)
        assert phonenumbers.region_code_for_number(parsed) == phonenumbers.region_code_for_number(
            caller
        )


def test_kept_numbers_are_written_as_they_are_and_listed() -> None:
    hotline = "+4989123456"
    call = record(keep_numbers=(CALLEE, hotline))
    call.turn(
        0.0,
        [start_event(call.start)],
        [
            say("Connecting you to 089 123456."),
            {"type": "event", "name": "transfer", "activityParams": {"transferTarget": hotline}},
        ],
    )
    obj = call.finish(1.0, "transferred")
    text = line_of(obj)
    assert obj["start"]["callee"] == CALLEE
    assert obj["turns"][0]["outputs"][1]["activityParams"]["transferTarget"] == hotline
    assert "089 123456" in text
    assert nsn(CALLER) not in text  # the caller is never kept
    assert obj["redaction"]["keep_numbers"] == [CALLEE, hotline]
    assert VALIDATOR.is_valid(obj)


def test_keep_numbers_setting_is_normalised_and_checked() -> None:
    settings = JournalSettings(path="j.jsonl", keep_numbers=["+49 89 123456", "+4989123456"])
    assert settings.keep_numbers == ("+4989123456",)
    with pytest.raises(ValidationError, match=r"E\.164"):
        JournalSettings(path="j.jsonl", keep_numbers=["089 123456"])
