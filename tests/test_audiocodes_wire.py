from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bridge.audiocodes.wire import (
    ActivityType,
    BotEvent,
    CallerEvent,
    activities_response,
    create_response,
    format_timestamp,
    new_activity_id,
    probe_response,
    stamp,
)

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
AT = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)


def test_stamp_adds_uuid4_id_and_millisecond_utc_timestamp() -> None:
    activity: dict[str, object] = {"type": "message", "text": "Hello"}
    stamped = stamp(activity, AT)
    assert stamped["timestamp"] == "2024-05-01T10:00:00.123Z"
    assert TIMESTAMP.match(str(stamped["timestamp"]))
    assert uuid.UUID(str(stamped["id"])).version == 4
    assert stamped["type"] == "message"
    assert stamped["text"] == "Hello"
    assert activity == {"type": "message", "text": "Hello"}, "input must not be modified"


def test_stamp_replaces_existing_id_and_timestamp_and_is_fresh_each_time() -> None:
    activity: dict[str, object] = {"id": "old", "timestamp": "yesterday", "type": "event"}
    first = stamp(activity, AT)
    second = stamp(activity, AT)
    assert first["id"] != "old"
    assert first["timestamp"] == "2024-05-01T10:00:00.123Z"
    assert first["id"] != second["id"]
    assert activity["id"] == "old"


def test_timestamp_converts_to_utc_and_treats_naive_as_utc() -> None:
    cest = timezone(timedelta(hours=2))
    assert format_timestamp(datetime(2024, 5, 1, 12, 0, 0, tzinfo=cest)) == (
        "2024-05-01T10:00:00.000Z"
    )
    assert format_timestamp(datetime(2024, 5, 1, 10, 0, 0, 999999)) == "2024-05-01T10:00:00.999Z"


def test_probe_response() -> None:
    assert probe_response() == {"type": "ac-bot-api", "success": True}


def test_create_response_root_relative() -> None:
    body = create_response("/ac/main", "c-1", 120, websocket=False)
    assert body == {
        "activitiesURL": "/ac/main/conversation/c-1/activities",
        "refreshURL": "/ac/main/conversation/c-1/refresh",
        "disconnectURL": "/ac/main/conversation/c-1/disconnect",
        "expiresSeconds": 120,
    }


def test_create_response_root_relative_with_websocket() -> None:
    body = create_response("/ac/main", "c-1", 60, websocket=True)
    assert body["websocketURL"] == "/ac/main/conversation/c-1/websocket"
    assert body["expiresSeconds"] == 60


@pytest.mark.parametrize(
    ("base", "ws"),
    [
        ("https://bridge.example.com/ac/main", "wss://bridge.example.com/ac/main"),
        ("http://127.0.0.1:8080/ac/main", "ws://127.0.0.1:8080/ac/main"),
        ("https://bridge.example.com/ac/main/", "wss://bridge.example.com/ac/main"),
    ],
)
def test_create_response_absolute(base: str, ws: str) -> None:
    body = create_response(base, "c-1", 120, websocket=True)
    http = base.rstrip("/")
    assert body["activitiesURL"] == f"{http}/conversation/c-1/activities"
    assert body["refreshURL"] == f"{http}/conversation/c-1/refresh"
    assert body["disconnectURL"] == f"{http}/conversation/c-1/disconnect"
    assert body["websocketURL"] == f"{ws}/conversation/c-1/websocket"


def test_create_response_quotes_the_conversation_id() -> None:
    body = create_response("/ac/r", "a/b c?d#e%f", 120, websocket=True)
    assert body["activitiesURL"] == "/ac/r/conversation/a%2Fb%20c%3Fd%23e%25f/activities"
    assert body["websocketURL"] == "/ac/r/conversation/a%2Fb%20c%3Fd%23e%25f/websocket"


def test_bodies_are_plain_json() -> None:
    body = create_response("/ac/r", "c", 1, websocket=True)
    assert all(type(key) is str for key in body)
    stamped = stamp({"type": "message", "text": "x"}, AT)
    assert all(type(key) is str for key in stamped)
    json.dumps([body, stamped, probe_response()])


def test_activities_response() -> None:
    outputs = [{"type": "message", "text": "Sure."}, {"type": "event", "name": "hangup"}]
    body = activities_response("c-1", outputs)
    assert body == {"conversation": "c-1", "activities": outputs}
    assert activities_response("c-1", []) == {"conversation": "c-1", "activities": []}


def test_wire_names() -> None:
    assert ActivityType.MESSAGE.value == "message"
    assert CallerEvent.DTMF.value == "DTMF"
    assert CallerEvent("dtmf") is CallerEvent.DTMF_LOWERCASE
    assert CallerEvent.NO_USER_INPUT.value == "noUserInput"
    assert BotEvent.SEND_META_DATA.value == "sendMetaData"
    assert BotEvent.SEND_DTMF.value == "sendDtmf"
    assert BotEvent.RESUME_CALL_RECORDING.value == "resumeCallRecording"


def test_activity_ids_are_distinct_version_4_uuids() -> None:
    ids = [new_activity_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:50]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_timestamp_text_follows_each_new_time() -> None:
    first = datetime(2026, 1, 1, 12, 0, 0, 999_999, tzinfo=UTC)
    assert format_timestamp(first) == "2026-01-01T12:00:00.999Z"
    assert format_timestamp(first) == "2026-01-01T12:00:00.999Z"  # remembered
    # equal instants in other zones or naive: the same text, never a stale one
    berlin = first.astimezone(timezone(timedelta(hours=1)))
    assert format_timestamp(berlin) == "2026-01-01T12:00:00.999Z"
    assert format_timestamp(first.replace(tzinfo=None)) == "2026-01-01T12:00:00.999Z"
    assert format_timestamp(first + timedelta(milliseconds=1)) == "2026-01-01T12:00:01.000Z"
    assert format_timestamp(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"
