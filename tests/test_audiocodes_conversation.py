from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audiocodes import (
    ActivitiesReceived,
    Conversation,
    ConversationEnded,
    DuplicateReceived,
    InputKind,
    Refreshed,
    State,
    classify,
    parse_create,
)
from bridge.audiocodes.conversation import OUTPUT_TURNS_KEPT, SEEN_IDS_KEPT
from bridge.errors import AudioCodesProtocolError

CID = "3f1c2b9e-conv"


def msg(activity_id: str | None, text: str = "hello") -> dict[str, object]:
    activity: dict[str, object] = {"type": "message", "text": text}
    if activity_id is not None:
        activity["id"] = activity_id
    return activity


def event(activity_id: str, name: str, **extra: object) -> dict[str, object]:
    return {"id": activity_id, "type": "event", "name": name, **extra}


def post(*activities: dict[str, object]) -> dict[str, object]:
    return {"conversation": CID, "activities": list(activities)}


def conv(now: float = 0.0, **kwargs: int) -> Conversation:
    return Conversation(CID, 120, now, **kwargs)


def reject(call: object, *args: object) -> AudioCodesProtocolError:
    assert callable(call)
    with pytest.raises(AudioCodesProtocolError) as info:
        call(*args)
    return info.value


# -- create ------------------------------------------------------------------------------


def test_parse_create_returns_the_id_and_ignores_unknown_fields() -> None:
    assert parse_create({"conversation": CID}) == CID
    assert parse_create({"conversation": CID, "bot": "x", "capabilities": [1], "id": 3}) == CID


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "conversation",
        {},
        {"conversation": ""},
        {"conversation": 5},
        {"conversation": None},
        {"conversation": "x" * 201},
    ],
)
def test_parse_create_rejects(body: object) -> None:
    error = reject(parse_create, body)
    assert (error.status, error.reason) == (400, "bad_request")
    assert ("conversation" in error.message) or ("body" in error.message)


def test_parse_create_names_the_field() -> None:
    assert reject(parse_create, {"conversation": 5}).message.startswith("conversation:")
    assert reject(parse_create, [1]).message.startswith("body:")
    assert parse_create({"conversation": "x" * 200}) == "x" * 200


# -- validation of activities POSTs --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (None, "body"),
        ([], "body"),
        ("text", "body"),
        ({"conversation": "other", "activities": []}, "conversation"),
        ({"conversation": 7, "activities": []}, "conversation"),
        ({"conversation": CID}, "activities"),
        ({"conversation": CID, "activities": {"type": "message"}}, "activities"),
        ({"activities": [5]}, "activities[0]"),
        ({"activities": [msg("a"), {"text": "x"}]}, "activities[1].type"),
        ({"activities": [{"type": 3}]}, "activities[0].type"),
        ({"activities": [{"type": "message"}]}, "activities[0].text"),
        ({"activities": [{"type": "message", "text": None}]}, "activities[0].text"),
        ({"activities": [{"type": "event", "value": "1"}]}, "activities[0].name"),
        ({"activities": [{"type": "event", "name": ["start"]}]}, "activities[0].name"),
        ({"activities": [{**msg(None), "id": 12}]}, "activities[0].id"),
        ({"activities": [{**msg(None), "id": ""}]}, "activities[0].id"),
        ({"activities": [msg("x" * 201)]}, "activities[0].id"),
    ],
)
def test_invalid_activities_post(body: object, field: str) -> None:
    c = conv()
    error = reject(c.receive_activities, body, 1.0)
    assert (error.status, error.reason) == (400, "bad_request")
    assert error.message.startswith(f"{field}:")
    assert c.turn == 0
    assert c.last_request_at == 0.0, "a rejected request does not refresh the idle timer"


def test_too_many_activities() -> None:
    c = conv(max_activities=3)
    error = reject(c.receive_activities, post(msg("1"), msg("2"), msg("3"), msg("4")), 1.0)
    assert (error.status, error.reason) == (413, "too_large")
    assert "activities" in error.message
    assert c.receive_activities(post(msg("1"), msg("2"), msg("3")), 1.0)[0] == (
        ActivitiesReceived(turn=1, activities=(msg("1"), msg("2"), msg("3")))
    )


def test_rejected_post_marks_no_id_as_seen() -> None:
    c = conv()
    reject(c.receive_activities, post(msg("a"), {"type": "message"}), 1.0)
    assert c.receive_activities(post(msg("a")), 2.0) == [
        ActivitiesReceived(turn=1, activities=(msg("a"),))
    ]


def test_valid_post_without_conversation_field_and_with_unknown_types() -> None:
    c = conv()
    odd: dict[str, object] = {"type": "config", "sessionParams": {}}
    events = c.receive_activities({"activities": [odd, msg("a")], "extra": 1}, 1.0)
    assert events == [ActivitiesReceived(turn=1, activities=(odd, msg("a")))]


def test_empty_activities_is_a_turn() -> None:
    c = conv()
    assert c.receive_activities(post(), 1.0) == [ActivitiesReceived(turn=1, activities=())]


# -- de-duplication ------------------------------------------------------------------------


def test_turns_count_from_one() -> None:
    c = conv()
    start = event("s", "start", parameters={"caller": "+4921154591991"})
    assert c.receive_activities(post(start), 1.0) == [
        ActivitiesReceived(turn=1, activities=(start,))
    ]
    assert c.receive_activities(post(msg("m1")), 2.0) == [
        ActivitiesReceived(turn=2, activities=(msg("m1"),))
    ]
    assert c.turn == 2


def test_retry_returns_duplicate_with_the_original_turn_and_its_outputs() -> None:
    c = conv()
    c.receive_activities(post(msg("a")), 1.0)
    c.receive_activities(post(msg("b")), 2.0)
    outputs = [{"id": "o1", "type": "message", "text": "Sure."}]
    c.record_outputs(1, outputs)
    c.record_outputs(2, [{"type": "event", "name": "hangup"}])
    assert c.receive_activities(post(msg("a")), 3.0) == [DuplicateReceived(turn=1)]
    assert c.outputs_of(1) == outputs
    assert c.receive_activities(post(msg("b")), 3.0) == [DuplicateReceived(turn=2)]
    assert c.turn == 2, "a duplicate is not a new turn"
    assert c.last_request_at == 3.0, "a duplicate still counts as activity"


def test_partial_duplicate_forwards_only_the_new_activities() -> None:
    c = conv()
    c.receive_activities(post(msg("a"), msg("b")), 1.0)
    events = c.receive_activities(post(msg("b"), msg("c"), msg("a"), msg("d")), 2.0)
    assert events == [ActivitiesReceived(turn=2, activities=(msg("c"), msg("d")))]


def test_activities_without_id_are_never_duplicates() -> None:
    c = conv()
    c.receive_activities(post(msg(None)), 1.0)
    assert c.receive_activities(post(msg(None)), 2.0) == [
        ActivitiesReceived(turn=2, activities=(msg(None),))
    ]
    c.receive_activities(post(msg("a")), 3.0)
    assert c.receive_activities(post(msg("a"), msg(None, "x")), 4.0) == [
        ActivitiesReceived(turn=4, activities=(msg(None, "x"),))
    ]


def test_same_id_twice_in_one_post_counts_once() -> None:
    c = conv()
    events = c.receive_activities(post(msg("a"), msg("a", "again")), 1.0)
    assert events == [ActivitiesReceived(turn=1, activities=(msg("a"),))]


def test_duplicate_spanning_turns_reports_the_latest() -> None:
    c = conv()
    c.receive_activities(post(msg("a")), 1.0)
    c.receive_activities(post(msg("b")), 2.0)
    assert c.receive_activities(post(msg("a"), msg("b")), 3.0) == [DuplicateReceived(turn=2)]


def test_seen_ids_are_bounded() -> None:
    c = conv()
    for i in range(SEEN_IDS_KEPT + 1):
        c.receive_activities(post(msg(f"id-{i}")), 1.0)
    # The oldest id aged out: it counts as new again; a recent one is still a duplicate.
    assert c.receive_activities(post(msg("id-0")), 2.0)[0] == ActivitiesReceived(
        turn=SEEN_IDS_KEPT + 2, activities=(msg("id-0"),)
    )
    assert c.receive_activities(post(msg(f"id-{SEEN_IDS_KEPT}")), 2.0) == [
        DuplicateReceived(turn=SEEN_IDS_KEPT + 1)
    ]


def test_outputs_are_bounded_and_replaced() -> None:
    c = conv()
    for turn in range(1, OUTPUT_TURNS_KEPT + 2):
        c.record_outputs(turn, [{"type": "message", "text": str(turn)}])
    assert c.outputs_of(1) == []
    assert c.outputs_of(2) == [{"type": "message", "text": "2"}]
    c.record_outputs(2, [])
    assert c.outputs_of(2) == []
    assert c.outputs_of(99) == []


def test_outputs_of_returns_copies() -> None:
    c = conv()
    c.record_outputs(1, [{"type": "message", "text": "a"}])
    c.outputs_of(1)[0]["text"] = "changed"
    assert c.outputs_of(1) == [{"type": "message", "text": "a"}]


# -- refresh, disconnect, expiry ---------------------------------------------------------


def test_refresh() -> None:
    c = conv()
    assert c.receive_refresh({"conversation": CID}, 100.0) == [Refreshed(expires_seconds=120)]
    assert c.receive_refresh({}, 101.0) == [Refreshed(expires_seconds=120)]
    assert c.last_request_at == 101.0
    error = reject(c.receive_refresh, {"conversation": "other"}, 102.0)
    assert (error.status, error.reason) == (400, "bad_request")
    assert reject(c.receive_refresh, "x", 102.0).status == 400


def test_expiry_at_one_and_a_half_times_expires_seconds() -> None:
    c = conv(now=1000.0)
    assert c.deadline() == 1180.0
    assert not c.expired(1180.0)
    assert c.expired(1180.001)
    c.receive_activities(post(msg("a")), 1100.0)
    assert not c.expired(1200.0)
    assert c.expired(1280.5)
    c.receive_refresh({"conversation": CID}, 1250.0)
    assert c.deadline() == 1430.0
    assert not c.expired(1400.0)


def test_disconnect_then_everything_is_not_found() -> None:
    c = conv()
    body = {"conversation": CID, "reasonCode": "client-disconnected", "reason": "Client Side"}
    assert c.receive_disconnect(body, 5.0) == [
        ConversationEnded(reason_code="client-disconnected", reason="Client Side")
    ]
    assert c.state is State.ENDED
    assert c.ended
    for call, payload in [
        (c.receive_disconnect, body),
        (c.receive_activities, post(msg("z"))),
        (c.receive_refresh, {}),
    ]:
        error = reject(call, payload, 6.0)
        assert (error.status, error.reason, error.message) == (
            404,
            "not_found",
            "conversation ended",
        )


def test_disconnect_with_empty_body_and_nulls() -> None:
    assert conv().receive_disconnect({}, 1.0) == [ConversationEnded(None, None)]
    assert conv().receive_disconnect({"reasonCode": None, "reason": "r"}, 1.0) == [
        ConversationEnded(None, "r")
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reasonCode": 5}, "reasonCode"),
        ({"reason": ["x"]}, "reason"),
        ({"conversation": "other"}, "conversation"),
        (None, "body"),
    ],
)
def test_disconnect_rejects_wrong_types_and_stays_active(body: object, field: str) -> None:
    c = conv()
    error = reject(c.receive_disconnect, body, 1.0)
    assert (error.status, error.reason) == (400, "bad_request")
    assert error.message.startswith(f"{field}:")
    assert c.state is State.ACTIVE


# -- classification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("activity", "kind"),
    [
        (event("1", "start", parameters={}), InputKind.START),
        (msg("2"), InputKind.SPEECH),
        (event("3", "DTMF", value="1"), InputKind.DTMF),
        (event("4", "dtmf", value="1"), InputKind.DTMF),
        (event("5", "noUserInput", value=1), InputKind.NO_INPUT),
        (event("6", "transferStatus", value={"status": "failed"}), InputKind.TRANSFER_STATUS),
        (event("7", "playUrlFailed", value={}), InputKind.PLAY_FAILED),
        (event("8", "conversationEnd"), InputKind.END),
        (event("9", "speechHypothesis"), InputKind.OTHER),
        (event("10", "Start"), InputKind.OTHER),
        ({"type": "config"}, InputKind.OTHER),
        ({"type": "event", "name": 3}, InputKind.OTHER),
        ({}, InputKind.OTHER),
    ],
)
def test_classify(activity: dict[str, object], kind: InputKind) -> None:
    assert classify(activity) is kind


# -- property: arbitrary JSON never raises anything else ---------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
activity_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.sampled_from(["a", "b", "c"]), json_values),
        "type": st.one_of(st.sampled_from(["message", "event"]), json_values),
        "text": json_values,
        "name": st.one_of(st.sampled_from(["start", "DTMF"]), json_values),
    },
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"activities": st.one_of(st.lists(st.one_of(activity_like, json_values)), json_values)},
        optional={"conversation": st.one_of(st.just(CID), json_values)},
    ),
)


@settings(max_examples=300)
@given(st.lists(bodies, min_size=1, max_size=4))
def test_arbitrary_json_only_raises_protocol_errors(sequence: list[object]) -> None:
    c = Conversation(CID, 120, 0.0, max_activities=5)
    for now, body in enumerate(sequence):
        try:
            events = c.receive_activities(body, float(now))
        except AudioCodesProtocolError as error:
            assert error.status in (400, 413)
            continue
        assert len(events) == 1
        assert isinstance(events[0], ActivitiesReceived | DuplicateReceived)
    for body in sequence:
        for call in (c.receive_refresh, c.receive_disconnect):
            try:
                call(body, 99.0)
            except AudioCodesProtocolError as error:
                assert error.status in (400, 404)


# -- snapshots ---------------------------------------------------------------------------


def test_snapshot_restores_dedup_outputs_and_idle_clock_in_another_process() -> None:
    original = conv(now=100.0)
    original.receive_activities(post(msg("a1"), msg("a2")), now=100.0)
    original.record_outputs(1, [{"type": "message", "text": "Hi."}])
    original.receive_activities(post(msg("a3")), now=110.0)
    snapshot = original.snapshot(now=115.0, wall=5_000.0)  # idle for 5 s at wall 5000

    # another process: its monotonic clock reads 7, and 2 s of wall time have passed
    restored = Conversation.restore(snapshot, now=7.0, wall=5_002.0)
    assert restored.conversation_id == CID and restored.turn == 2
    assert restored.last_request_at == pytest.approx(0.0)  # 7 s idle on the new clock
    assert restored.deadline() == pytest.approx(original.deadline() - 110.0)
    assert restored.receive_activities(post(msg("a1")), now=8.0) == [DuplicateReceived(turn=1)]
    assert restored.outputs_of(1) == [{"type": "message", "text": "Hi."}]
    assert restored.receive_activities(post(msg("a4")), now=9.0)[0] == ActivitiesReceived(
        turn=3, activities=(msg("a4"),)
    )
    assert Conversation.restore(restored.snapshot(9.0, 1.0), 9.0, 1.0).snapshot(
        9.0, 1.0
    ) == restored.snapshot(9.0, 1.0)


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"conversation_id": 5},
        "not a mapping at all",
    ],
)
def test_a_broken_snapshot_is_a_value_error(broken: object) -> None:
    with pytest.raises(ValueError):
        Conversation.restore(broken, 0.0, 0.0)  # type: ignore[arg-type]
