from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audiocodes.events import (
    ActivitiesReceived,
    DuplicateReceived,
    MessageRejected,
    SessionEnded,
    SessionInitiated,
)
from bridge.audiocodes.streaming import (
    AUDIO_REFUSAL,
    NOT_FOUND,
    StreamingSession,
    StreamState,
    parse_resume,
)
from bridge.audiocodes.wire import CloseCode
from bridge.errors import AudioCodesProtocolError

CID = "7a0e-stream-conv"
EXPIRES = 120


def frame(**fields: object) -> str:
    return json.dumps(fields)


def initiate(**overrides: object) -> str:
    message: dict[str, object] = {
        "type": "session.initiate",
        "conversationId": CID,
        "expectAudioMessages": False,
        "supportedMediaFormats": ["raw/lpcm16", "raw/mulaw"],
        "caller": "+15550100",
        "botName": "migrated",
    }
    message.update(overrides)
    return json.dumps(message)


def activities(*items: dict[str, object], cid: str | None = CID) -> str:
    message: dict[str, object] = {"type": "activities", "activities": list(items)}
    if cid is not None:
        message["conversationId"] = cid
    return json.dumps(message)


START: dict[str, object] = {
    "id": "a1",
    "type": "event",
    "name": "start",
    "parameters": {"callee": "+15550199"},
}
HELLO: dict[str, object] = {"id": "a2", "type": "message", "text": "hello"}


def session(now: float = 0.0) -> StreamingSession:
    return StreamingSession(EXPIRES, now)


def accepted_session(now: float = 0.0) -> StreamingSession:
    s = session(now)
    s.receive_text(initiate(), now)
    s.events_received()
    s.accept(now)
    s.messages_to_send()
    return s


def rejections(s: StreamingSession) -> list[MessageRejected]:
    return [e for e in s.events_received() if isinstance(e, MessageRejected)]


# -- happy path --------------------------------------------------------------------------


def test_happy_path_initiate_accept_activities_outputs_end() -> None:
    s = session()
    s.receive_text(initiate(), 1.0)
    [started] = s.events_received()
    assert isinstance(started, SessionInitiated)
    assert started.conversation_id == CID
    assert started.caller == "+15550100"
    assert started.initiate["botName"] == "migrated"
    assert s.messages_to_send() == []  # nothing before the bot accepts
    assert s.state is StreamState.INITIATED

    s.accept(2.0)
    assert s.messages_to_send() == [{"type": "session.accepted", "mediaFormat": "raw/lpcm16"}]

    s.receive_text(activities(START), 3.0)
    assert s.events_received() == [ActivitiesReceived(turn=1, activities=(START,))]

    outputs = [{"id": "o1", "type": "message", "text": "Welcome"}]
    s.send_activities(outputs)
    assert s.messages_to_send() == [
        {"type": "activities", "conversationId": CID, "activities": outputs}
    ]

    s.receive_text(activities(HELLO), 4.0)
    assert s.events_received() == [ActivitiesReceived(turn=2, activities=(HELLO,))]

    s.receive_text(
        frame(type="session.end", conversationId=CID, reasonCode="client-disconnected"), 5.0
    )
    assert s.events_received() == [SessionEnded(reason_code="client-disconnected", reason=None)]
    assert s.close_requested == CloseCode.NORMAL == 1000
    assert s.ended and s.conversation is not None and s.conversation.ended
    assert s.messages_to_send() == []


def test_bytes_frames_are_accepted() -> None:
    s = session()
    s.receive_text(initiate().encode(), 0.0)
    assert isinstance(s.events_received()[0], SessionInitiated)


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        ([], {"type": "session.accepted"}),
        (None, {"type": "session.accepted"}),
        ("raw/mulaw", {"type": "session.accepted"}),
        ([3, "", "wav/mulaw"], {"type": "session.accepted", "mediaFormat": "wav/mulaw"}),
    ],
)
def test_accept_offers_the_first_offered_format_or_none(
    offered: object, expected: dict[str, object]
) -> None:
    s = session()
    s.receive_text(initiate(supportedMediaFormats=offered), 0.0)
    s.accept(0.0)
    assert s.messages_to_send() == [expected]


def test_missing_expect_audio_messages_means_text() -> None:
    s = session()
    message = json.loads(initiate())
    del message["expectAudioMessages"]
    s.receive_text(json.dumps(message), 0.0)
    assert isinstance(s.events_received()[0], SessionInitiated)


def test_session_end_reason_under_parameters_and_top_level_wins() -> None:
    s = accepted_session()
    s.receive_text(
        frame(
            type="session.end",
            conversationId=CID,
            reason="top",
            parameters={"reasonCode": "error", "reason": "nested"},
        ),
        1.0,
    )
    assert s.events_received() == [SessionEnded(reason_code="error", reason="top")]


def test_session_end_with_odd_reason_types_still_ends() -> None:
    s = accepted_session()
    s.receive_text(frame(type="session.end", reasonCode=7, parameters="x"), 1.0)
    assert s.events_received() == [SessionEnded(reason_code=None, reason=None)]
    assert s.close_requested == 1000


# -- refusals ----------------------------------------------------------------------------


def test_expect_audio_messages_true_is_refused_and_closed() -> None:
    s = session()
    s.receive_text(initiate(expectAudioMessages=True), 0.0)
    assert s.messages_to_send() == [
        {"type": "session.error", "conversationId": CID, "reason": AUDIO_REFUSAL}
    ]
    assert "expectAudioMessages" in AUDIO_REFUSAL and "false" in AUDIO_REFUSAL
    assert s.close_requested == CloseCode.POLICY_VIOLATION == 1008
    assert [r.reason for r in rejections(s)] == ["audio_unsupported"]
    assert s.ended and s.conversation is None


@pytest.mark.parametrize(
    "bad",
    [
        {"conversationId": ""},
        {"conversationId": 12},
        {"conversationId": "x" * 201},
        {"expectAudioMessages": "false"},
    ],
)
def test_malformed_initiate_is_refused(bad: dict[str, object]) -> None:
    s = session()
    s.receive_text(initiate(**bad), 0.0)
    [error] = s.messages_to_send()
    assert error["type"] == "session.error"
    assert s.close_requested == 1008
    assert not any(isinstance(e, SessionInitiated) for e in s.events_received())


def test_bot_can_refuse_an_initiated_session() -> None:
    s = session()
    s.receive_text(initiate(), 0.0)
    s.refuse("no route", 0.5)
    assert s.messages_to_send() == [
        {"type": "session.error", "conversationId": CID, "reason": "no route"}
    ]
    assert s.close_requested == 1008 and s.ended


def test_second_initiate_answers_error_but_keeps_the_call() -> None:
    s = accepted_session()
    s.receive_text(initiate(), 1.0)
    [error] = s.messages_to_send()
    assert error["type"] == "session.error" and error["conversationId"] == CID
    assert [r.reason for r in rejections(s)] == ["wrong_state"]
    assert s.close_requested is None and s.state is StreamState.ACCEPTED


def test_second_initiate_before_accept_is_rejected() -> None:
    s = session()
    s.receive_text(initiate(), 0.0)
    s.events_received()
    s.receive_text(initiate(), 0.1)
    assert [m["type"] for m in s.messages_to_send()] == ["session.error"]
    assert s.state is StreamState.INITIATED
    s.accept(0.2)  # the first initiate can still be accepted
    assert s.messages_to_send()[0]["type"] == "session.accepted"


# -- bot-side misuse raises ---------------------------------------------------------------


def test_accept_before_initiate_raises() -> None:
    with pytest.raises(AudioCodesProtocolError):
        session().accept(0.0)


def test_accept_twice_raises() -> None:
    s = accepted_session()
    with pytest.raises(AudioCodesProtocolError):
        s.accept(1.0)


def test_send_before_accept_raises_and_after_end_is_dropped() -> None:
    s = session()
    s.receive_text(initiate(), 0.0)
    with pytest.raises(AudioCodesProtocolError):
        s.send_activities([HELLO])
    with pytest.raises(AudioCodesProtocolError):
        accepted_session().refuse("late", 1.0)
    s.accept(0.0)
    s.messages_to_send()
    s.receive_text(frame(type="session.end", conversationId=CID), 1.0)
    s.send_activities([HELLO])
    assert s.messages_to_send() == []


def test_send_of_nothing_queues_nothing() -> None:
    s = accepted_session()
    s.send_activities([])
    assert s.messages_to_send() == []


# -- activities --------------------------------------------------------------------------


def test_activities_before_accept_are_rejected() -> None:
    s = session()
    s.receive_text(activities(START), 0.0)
    assert [r.reason for r in rejections(s)] == ["wrong_state"]
    s.receive_text(initiate(), 0.0)
    s.events_received()
    s.receive_text(activities(START), 0.0)
    assert [r.reason for r in rejections(s)] == ["wrong_state"]
    assert s.messages_to_send() == []


def test_duplicates_are_reported_not_forwarded() -> None:
    s = accepted_session()
    s.receive_text(activities(START), 1.0)
    s.receive_text(activities(HELLO), 2.0)
    s.receive_text(activities(HELLO), 3.0)
    s.receive_text(activities(START, HELLO), 4.0)
    assert s.events_received() == [
        ActivitiesReceived(turn=1, activities=(START,)),
        ActivitiesReceived(turn=2, activities=(HELLO,)),
        DuplicateReceived(turn=2),
        DuplicateReceived(turn=2),
    ]
    assert s.messages_to_send() == []


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"type": "activities", "conversationId": CID}, "bad_request"),
        ({"type": "activities", "activities": {"a": 1}}, "bad_request"),
        ({"type": "activities", "activities": [{"type": "message"}]}, "bad_request"),
        (
            {"type": "activities", "activities": [{"type": "message", "text": "x"}] * 51},
            "too_large",
        ),
    ],
)
def test_invalid_activities_are_ignored_and_the_call_goes_on(
    message: dict[str, object], reason: str
) -> None:
    s = accepted_session()
    s.receive_text(json.dumps(message), 1.0)
    [rejected] = s.events_received()
    assert isinstance(rejected, MessageRejected) and rejected.reason == reason
    assert s.messages_to_send() == [] and s.close_requested is None
    s.receive_text(activities(START), 2.0)
    assert s.events_received() == [ActivitiesReceived(turn=1, activities=(START,))]


def test_max_activities_is_passed_to_the_conversation() -> None:
    s = StreamingSession(EXPIRES, 0.0, max_activities=1)
    s.receive_text(initiate(), 0.0)
    s.accept(0.0)
    s.events_received()
    s.receive_text(activities(START, HELLO), 1.0)
    assert [r.reason for r in rejections(s)] == ["too_large"]


def test_conversation_id_mismatch_is_rejected_and_absence_tolerated() -> None:
    s = accepted_session()
    s.receive_text(activities(START, cid="someone-else"), 1.0)
    assert [r.reason for r in rejections(s)] == ["conversation_mismatch"]
    s.receive_text(frame(type="session.end", conversationId="someone-else"), 1.0)
    assert [r.reason for r in rejections(s)] == ["conversation_mismatch"]
    assert not s.ended
    s.receive_text(activities(START, cid=None), 2.0)
    assert s.events_received() == [ActivitiesReceived(turn=1, activities=(START,))]


# -- other message types ------------------------------------------------------------------


def test_connection_validate_is_answered_without_a_session_and_kept_open() -> None:
    s = session()
    s.receive_text(frame(type="connection.validate"), 0.0)
    assert s.messages_to_send() == [{"type": "connection.validated", "success": True}]
    assert s.close_requested is None and s.events_received() == []
    assert s.state is StreamState.AWAITING_INITIATE


@pytest.mark.parametrize("kind", ["userStream.start", "userStream.chunk", "userStream.stop"])
def test_audio_messages_are_rejected_without_killing_the_call(kind: str) -> None:
    s = accepted_session()
    s.receive_text(frame(type=kind, conversationId=CID, audioChunk="AAAA"), 1.0)
    assert [r.reason for r in rejections(s)] == ["audio_unsupported"]
    assert s.messages_to_send() == [] and s.close_requested is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        ("[1, 2]", "bad_message"),
        ('{"conversationId": "x"}', "bad_message"),
        ('{"type": 5}', "bad_message"),
        ('{"type": "session.dance", "conversationId": "x"}', "unknown_type"),
        ("[" * 100_000, "not_json"),
    ],
)
def test_bad_frames_are_rejected_and_never_raise(text: str | bytes, reason: str) -> None:
    s = accepted_session()
    s.receive_text(text, 1.0)
    assert [r.reason for r in rejections(s)] == [reason]
    assert s.state is StreamState.ACCEPTED and s.close_requested is None


def test_frames_after_end_are_rejected() -> None:
    s = accepted_session()
    s.receive_text(frame(type="session.end"), 1.0)
    s.events_received()
    s.receive_text(activities(HELLO), 2.0)
    s.receive_text(initiate(), 2.0)
    assert [r.reason for r in rejections(s)] == ["ended", "ended"]
    assert s.messages_to_send() == []


def test_rejection_details_do_not_echo_frame_content() -> None:
    s = accepted_session()
    s.receive_text(frame(type="+15550123", conversationId=CID), 1.0)
    s.receive_text(activities(START, cid="+15550123"), 1.0)
    for rejected in rejections(s):
        assert "15550123" not in rejected.detail


# -- resume ------------------------------------------------------------------------------


def test_parse_resume() -> None:
    resume = frame(type="session.resume", conversationId=CID)
    assert parse_resume(resume) == CID
    assert parse_resume(resume.encode()) == CID
    assert parse_resume({"type": "session.resume", "conversationId": CID}) == CID
    assert parse_resume(initiate()) is None
    assert parse_resume(frame(type="session.resume")) is None
    assert parse_resume(frame(type="session.resume", conversationId="")) is None
    assert parse_resume("garbage") is None
    assert parse_resume("[]") is None


def test_resume_on_a_fresh_socket_is_not_found_and_closed() -> None:
    s = session()
    s.receive_text(frame(type="session.resume", conversationId="gone"), 0.0)
    assert s.messages_to_send() == [
        {"type": "session.error", "conversationId": "gone", "reason": NOT_FOUND}
    ]
    assert s.close_requested == 1008 and s.ended


def test_reattach_after_detach_accepts_and_delivers_held_outputs() -> None:
    s = accepted_session()
    s.receive_text(activities(START), 1.0)
    s.events_received()
    s.detach(2.0)
    assert s.state is StreamState.DETACHED
    s.send_activities([{"type": "message", "text": "held"}])
    # The transport saw a new socket whose first frame is a resume for this conversation.
    first = frame(type="session.resume", conversationId=CID)
    assert parse_resume(first) == s.conversation_id
    s.reattach(3.0)
    sent = s.messages_to_send()
    assert sent[0] == {"type": "session.accepted"}
    assert sent[1]["type"] == "activities"
    assert sent[1]["activities"] == [{"type": "message", "text": "held"}]
    assert s.state is StreamState.ACCEPTED and s.close_requested is None
    # De-duplication survives the socket change.
    s.receive_text(activities(START), 4.0)
    assert s.events_received() == [DuplicateReceived(turn=1)]


def test_reattach_while_the_old_socket_still_looks_open() -> None:
    s = accepted_session()
    s.reattach(1.0)
    assert s.messages_to_send() == [{"type": "session.accepted"}]
    assert s.state is StreamState.ACCEPTED


@pytest.mark.parametrize("end", ["session_end", "never_accepted"])
def test_reattach_of_an_unresumable_session_is_not_found(end: str) -> None:
    s = session()
    s.receive_text(initiate(), 0.0)
    if end == "session_end":
        s.accept(0.0)
        s.receive_text(frame(type="session.end"), 1.0)
    s.messages_to_send()
    s.reattach(2.0)
    assert s.messages_to_send() == [
        {"type": "session.error", "conversationId": CID, "reason": NOT_FOUND}
    ]
    assert s.close_requested == 1008 and s.ended


def test_resume_on_the_live_socket() -> None:
    s = accepted_session()
    s.receive_text(frame(type="session.resume", conversationId=CID), 1.0)
    assert s.messages_to_send() == [{"type": "session.accepted"}]
    s.receive_text(frame(type="session.resume", conversationId="other"), 1.0)
    assert s.messages_to_send() == [
        {"type": "session.error", "conversationId": "other", "reason": NOT_FOUND}
    ]
    assert [r.reason for r in rejections(s)] == ["conversation_mismatch"]
    assert s.close_requested is None and s.state is StreamState.ACCEPTED


def test_detach_before_accept_ends() -> None:
    s = session()
    s.receive_text(initiate(), 0.0)
    s.detach(1.0)
    assert s.ended
    with pytest.raises(AudioCodesProtocolError):
        s.accept(1.0)


# -- expiry ------------------------------------------------------------------------------


def test_a_live_call_on_an_open_socket_never_expires() -> None:
    s = accepted_session(0.0)
    assert s.deadline() is None
    assert not s.expired(10_000_000.0)


def test_a_socket_without_a_session_expires_when_idle() -> None:
    s = session(0.0)
    s.receive_text(frame(type="connection.validate"), 10.0)
    assert not s.expired(10.0 + 1.5 * EXPIRES)
    assert s.expired(10.0 + 1.5 * EXPIRES + 0.001)


def test_a_detached_call_expires_unless_resumed() -> None:
    s = accepted_session(0.0)
    s.detach(100.0)
    assert s.deadline() == 100.0 + 1.5 * EXPIRES
    assert not s.expired(100.0 + 1.5 * EXPIRES)
    assert s.expired(100.0 + 1.5 * EXPIRES + 1)
    s.reattach(200.0)
    assert not s.expired(100_000.0)


def test_an_ended_session_is_expired() -> None:
    s = accepted_session()
    s.receive_text(frame(type="session.end"), 1.0)
    assert s.expired(1.0)


# -- properties: arbitrary input never raises, every outgoing message is typed -------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
TYPES = st.sampled_from(
    [
        "session.initiate",
        "session.resume",
        "session.end",
        "activities",
        "connection.validate",
        "userStream.start",
        "userStream.chunk",
        "nonsense",
    ]
)
MESSAGES = st.builds(
    lambda kind, cid, extra: {**extra, "type": kind, **({"conversationId": cid} if cid else {})},
    TYPES,
    st.sampled_from([None, CID, "other", ""]),
    st.dictionaries(
        st.sampled_from(
            ["activities", "expectAudioMessages", "supportedMediaFormats", "caller", "reason"]
        ),
        JSON,
        max_size=3,
    ),
)
FRAMES = st.one_of(
    st.text(max_size=50),
    st.binary(max_size=50),
    JSON.map(json.dumps),
    MESSAGES.map(json.dumps),
    st.just(initiate()),
    st.just(activities(START, HELLO)),
)


def _check_outgoing(s: StreamingSession) -> None:
    for message in s.messages_to_send():
        assert isinstance(message.get("type"), str)
        json.dumps(message)
    assert s.close_requested in (None, 1000, 1008)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(FRAMES, max_size=8), accept_after=st.integers(0, 8))
def test_arbitrary_frames_never_raise(frames: list[str | bytes], accept_after: int) -> None:
    s = session()
    for i, text in enumerate(frames):
        s.receive_text(text, float(i))
        if i == accept_after and s.state is StreamState.INITIATED:
            s.accept(float(i))
        for event in s.events_received():
            if isinstance(event, MessageRejected):
                assert event.reason and event.detail
        _check_outgoing(s)
        if s.state in (StreamState.ACCEPTED, StreamState.DETACHED):
            s.send_activities([{"type": "message", "text": "x"}])
            _check_outgoing(s)


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(FRAMES, max_size=6))
def test_arbitrary_frames_on_a_live_call_never_close_it_except_session_end(
    frames: list[str | bytes],
) -> None:
    s = accepted_session()
    for i, text in enumerate(frames):
        s.receive_text(text, float(i))
        ended = any(isinstance(e, SessionEnded) for e in s.events_received())
        _check_outgoing(s)
        if ended:
            assert s.close_requested == 1000
            return
        assert s.close_requested is None and s.state is StreamState.ACCEPTED
