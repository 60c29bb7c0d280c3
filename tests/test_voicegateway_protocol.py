from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import VoiceGatewayProtocolError
from bridge.voicegateway.events import (
    Acked,
    AckTimedOut,
    CloseRequested,
    CommandIgnored,
    FrameRejected,
    SessionAccepted,
    StackIdle,
    VerbExecuted,
)
from bridge.voicegateway.protocol import CallProtocol, new_msgid
from bridge.voicegateway.wire import ACK_TIMEOUT_S, HookKind
from tests.jambonz_schema import assert_valid_callback

CALL_SID = "5f0e3b1c-7d2a-4c1e-9a55-2f6b1d3e8a90"
T0 = 1000.0

SPEECH_RESULT: dict[str, Any] = {
    "reason": "speechDetected",
    "speech": {
        "language_code": "en-US",
        "channel_tag": 1,
        "is_final": True,
        "alternatives": [{"transcript": "I need help with my bill", "confidence": 0.93}],
    },
}
DTMF_RESULT: dict[str, Any] = {"reason": "dtmfDetected", "digits": "12"}
TIMEOUT_RESULT: dict[str, Any] = {"reason": "timeout"}


def session_new_data() -> dict[str, Any]:
    return {
        "sip": {
            "headers": {
                "call-id": "a84b4c76e66710@pc33.example.com",
                "X-CID": "3c26aa0e-1b0c-44a1-8f8f-6b54c1c0d6f1",
                "X-Conversation-Id": "conv-1",
            },
            "method": "INVITE",
            "version": "2.0",
            "uri": "sip:+4930123456@vg.example.com",
            "body": "",
            "payload": [],
        },
        "direction": "inbound",
        "caller_name": "",
        "call_sid": CALL_SID,
        "account_sid": "9351f46a-678c-43f5-b8a6-d4eb58d131af",
        "application_sid": "0dddaabf-0a30-43e3-84e8-426873b1a78b",
        "service_provider_sid": "2708b1b3-2736-40ea-b502-c53d8396247f",
        "from": "+4921154591991",
        "to": "+4930123456",
        "call_id": "a84b4c76e66710@pc33.example.com",
        "sbc_callid": "3c26aa0e-1b0c-44a1-8f8f-6b54c1c0d6f1",
        "sip_status": 100,
        "sip_reason": "Trying",
        "call_status": "trying",
        "local_sip_address": "10.0.0.5:5060",
        "trace_id": "00000000000000000000000000000000",
        "defaults": {
            "synthesizer": {"vendor": "microsoft", "language": "en-US", "voice": "en-US-Jenny"},
            "recognizer": {"vendor": "microsoft", "language": "en-US"},
        },
        "customerData": {
            "numberMetaData": {"number": "+4921154591991", "country": "DE", "valid": True},
            "audiocodes": {"callee": "+4930123456"},
        },
    }


def make_protocol(**kwargs: Any) -> CallProtocol:
    counter = itertools.count(1)
    return CallProtocol(CALL_SID, now=T0, msgid_factory=lambda: f"m{next(counter)}", **kwargs)


def started(verbs: list[Any], **kwargs: Any) -> CallProtocol:
    """A protocol whose session:new was acked at T0 with `verbs`; outbox and events drained."""
    proto = make_protocol(**kwargs)
    proto.start(session_new_data(), T0)
    [msg] = proto.messages_to_send()
    proto.receive_message({"type": "ack", "msgid": msg["msgid"], "data": verbs}, T0)
    proto.messages_to_send()
    proto.events_received()
    return proto


def ack(proto: CallProtocol, msgid: str, verbs: list[Any] | None, now: float = T0) -> None:
    frame: dict[str, Any] = {"type": "ack", "msgid": msgid}
    if verbs is not None:
        frame["data"] = verbs
    proto.receive_text(json.dumps(frame), now)


def redirect(proto: CallProtocol, verbs: list[Any], *, queue: bool, now: float = T0) -> None:
    proto.receive_text(
        json.dumps(
            {"type": "command", "command": "redirect", "queueCommand": queue, "data": verbs}
        ),
        now,
    )


def command(proto: CallProtocol, name: str, data: Any, now: float = T0) -> None:
    proto.receive_message({"type": "command", "command": name, "data": data}, now)


def executed(events: list[Any]) -> list[dict[str, Any]]:
    return [e.verb for e in events if isinstance(e, VerbExecuted)]


def texts(events: list[Any]) -> list[str]:
    return [v.get("text", v["verb"]) for v in executed(events)]


def assert_envelope(msg: dict[str, Any], msg_type: str) -> None:
    assert msg["type"] == msg_type
    assert isinstance(msg["msgid"], str)
    assert msg["msgid"]
    assert msg["call_sid"] == CALL_SID
    assert isinstance(msg["data"], dict)


def say(text: str) -> dict[str, Any]:
    return {"verb": "say", "text": text}


GATHER = {"verb": "gather", "input": ["speech", "digits"], "actionHook": "voice", "timeout": 10}


# ---------------------------------------------------------------- session:new


def test_start_queues_session_new_valid_against_schema() -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    [msg] = proto.messages_to_send()
    assert_envelope(msg, "session:new")
    assert "hook" not in msg
    assert msg["data"] == session_new_data()
    assert_valid_callback("session-new", msg["data"])
    assert proto.next_deadline() == T0 + ACK_TIMEOUT_S
    assert proto.events_received() == []


def test_start_twice_is_a_programming_error() -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    with pytest.raises(VoiceGatewayProtocolError):
        proto.start(session_new_data(), T0)


def test_start_does_not_alias_the_callers_dict() -> None:
    proto = make_protocol()
    data = session_new_data()
    proto.start(data, T0)
    data["customerData"]["audiocodes"]["callee"] = "changed"
    [msg] = proto.messages_to_send()
    assert msg["data"]["customerData"]["audiocodes"]["callee"] == "+4930123456"
    assert proto.session_new_data == session_new_data()


def test_default_msgids_are_short_random_base58() -> None:
    ids = {new_msgid() for _ in range(200)}
    assert len(ids) == 200
    for msgid in ids:
        assert len(msgid) == 22
        assert not set(msgid) & set("0OIl+/=-_")
    proto = CallProtocol(CALL_SID, now=T0)
    proto.start(session_new_data(), T0)
    [msg] = proto.messages_to_send()
    assert len(msg["msgid"]) == 22


def test_session_ack_accepts_then_in_progress_then_runs_the_stack() -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    [new] = proto.messages_to_send()
    ack(
        proto,
        new["msgid"],
        [say("Welcome"), {"gather": {k: v for k, v in GATHER.items() if k != "verb"}}],
        now=T0 + 0.25,
    )
    events = proto.events_received()
    assert events[0] == SessionAccepted(0.25)
    assert executed(events) == [say("Welcome"), GATHER]
    assert not any(isinstance(e, StackIdle) for e in events)  # blocked on gather
    [status] = proto.messages_to_send()
    assert_envelope(status, "call:status")
    assert status["data"]["call_status"] == "in-progress"
    assert status["data"]["sip_status"] == 200
    assert status["data"]["fs_sip_address"] == "10.0.0.5:5060"
    assert status["data"]["from"] == "+4921154591991"
    assert "sip" not in status["data"]
    assert "defaults" not in status["data"]
    assert_valid_callback("call-status", status["data"])
    assert proto.accepted
    assert proto.next_deadline() is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [([], "no application provided"), ({"verb": "say"}, "must be array"), (None, "must be array")],
)
def test_session_ack_without_verbs_rejects_the_call(data: Any, reason: str) -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    [new] = proto.messages_to_send()
    ack(proto, new["msgid"], data)
    events = proto.events_received()
    assert len(events) == 2
    assert isinstance(events[0], FrameRejected)
    assert reason in events[0].reason
    assert events[1] == CloseRequested(1001)
    assert proto.messages_to_send() == []
    assert proto.ended
    assert not proto.accepted


def test_session_ack_with_malformed_verb_rejects_the_call() -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    [new] = proto.messages_to_send()
    ack(proto, new["msgid"], [say("ok"), "hangup"])
    events = proto.events_received()
    assert isinstance(events[0], FrameRejected)
    assert events[-1] == CloseRequested(1001)
    assert executed(events) == []


def test_session_new_never_acked_times_out_and_closes_1001() -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    [new] = proto.messages_to_send()
    proto.tick(T0 + ACK_TIMEOUT_S - 0.01)
    assert proto.events_received() == []
    proto.tick(T0 + ACK_TIMEOUT_S)
    assert proto.events_received() == [
        AckTimedOut("session:new", new["msgid"]),
        CloseRequested(1001),
    ]
    assert proto.next_deadline() is None
    ack(proto, new["msgid"], [say("late")], now=T0 + 6)
    assert proto.events_received() == []
    assert proto.messages_to_send() == []


def test_late_session_ack_counts_as_timed_out_even_without_tick() -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    [new] = proto.messages_to_send()
    ack(proto, new["msgid"], [say("late")], now=T0 + 7)
    events = proto.events_received()
    assert events == [AckTimedOut("session:new", new["msgid"]), CloseRequested(1001)]


def test_both_verb_forms_and_float_timeouts_in_session_ack() -> None:
    proto = started(
        [
            {"config": {"synthesizer": {"vendor": "microsoft", "language": "de-DE"}}},
            {"verb": "say", "text": "Hallo"},
            {"verb": "gather", "input": ["speech"], "actionHook": "voice", "timeout": 10.0},
        ]
    )
    assert proto.accepted
    proto2 = make_protocol()
    proto2.start(session_new_data(), T0)
    [new] = proto2.messages_to_send()
    ack(
        proto2,
        new["msgid"],
        [{"say": {"text": "Hallo"}}, {"gather": {"timeout": 10.0, "actionHook": "voice"}}],
    )
    verbs = executed(proto2.events_received())
    assert verbs == [
        {"verb": "say", "text": "Hallo"},
        {"verb": "gather", "timeout": 10.0, "actionHook": "voice"},
    ]
    assert isinstance(verbs[1]["timeout"], float)


# ------------------------------------------------------------------ verb:hook


@pytest.mark.parametrize("result", [SPEECH_RESULT, DTMF_RESULT, TIMEOUT_RESULT])
def test_verb_hook_payloads_validate_against_gather_schema(result: dict[str, Any]) -> None:
    proto = started([say("Hi"), GATHER])
    assert proto.send_input(HookKind.INPUT, result, T0 + 1)
    [msg] = proto.messages_to_send()
    assert_envelope(msg, "verb:hook")
    assert msg["hook"] == "voice"
    data = msg["data"]
    assert_valid_callback("gather", data)
    for key, value in result.items():
        assert data[key] == value
    assert data["call_sid"] == CALL_SID
    assert data["call_status"] == "in-progress"
    assert data["sip_status"] == 200
    assert data["direction"] == "inbound"
    assert data["account_sid"] == session_new_data()["account_sid"]
    assert data["customerData"] == session_new_data()["customerData"]
    assert "sip" not in data
    assert proto.next_deadline() == T0 + 1 + ACK_TIMEOUT_S


def test_gather_hook_uses_the_gathers_own_action_hook() -> None:
    proto = started([{**GATHER, "actionHook": "/gather-result"}], input_hook="voice")
    assert proto.pending_hook(HookKind.INPUT) == "/gather-result"
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    [msg] = proto.messages_to_send()
    assert msg["hook"] == "/gather-result"


def test_object_action_hook_sends_its_url() -> None:
    proto = started([{**GATHER, "actionHook": {"url": "wss://h/x", "method": "POST"}}])
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    [msg] = proto.messages_to_send()
    assert msg["hook"] == "wss://h/x"


def test_input_without_pending_gather_goes_to_route_default_hook() -> None:
    proto = started([say("Hi")], input_hook="cognigy-input")
    assert proto.send_input(HookKind.INPUT, DTMF_RESULT, T0)
    [msg] = proto.messages_to_send()
    assert msg["hook"] == "cognigy-input"
    assert_valid_callback("gather", msg["data"])


def test_gather_blocks_until_its_hook_is_acked() -> None:
    proto = started([say("Q"), GATHER, say("after")])
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0 + 1)
    assert executed(proto.events_received()) == []
    [hook] = proto.messages_to_send()
    ack(proto, hook["msgid"], None, now=T0 + 1.2)
    events = proto.events_received()
    assert texts(events) == ["after"]
    assert isinstance(events[-1], StackIdle)


def test_ack_with_verbs_replaces_the_remaining_stack() -> None:
    proto = started([GATHER, say("old remaining")])
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    [hook] = proto.messages_to_send()
    ack(proto, hook["msgid"], [say("new"), {"hangup": {}}])
    events = proto.events_received()
    assert texts(events) == ["new", "hangup"]
    assert proto.hung_up
    assert not any(isinstance(e, StackIdle) for e in events)


@pytest.mark.parametrize("verbs", [[], None])
def test_empty_or_absent_ack_continues_the_stack(verbs: list[Any] | None) -> None:
    proto = started([GATHER, say("next"), GATHER])
    proto.send_input(HookKind.INPUT, TIMEOUT_RESULT, T0)
    [hook] = proto.messages_to_send()
    ack(proto, hook["msgid"], verbs)
    assert texts(proto.events_received()) == ["next", "gather"]


def test_hook_never_acked_times_out_at_5s_and_the_stack_carries_on() -> None:
    proto = started([GATHER, say("carry on")])
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0 + 2)
    [hook] = proto.messages_to_send()
    assert proto.next_deadline() == T0 + 2 + ACK_TIMEOUT_S
    proto.tick(T0 + 2 + ACK_TIMEOUT_S - 0.001)
    assert proto.events_received() == []
    proto.tick(T0 + 2 + ACK_TIMEOUT_S)
    events = proto.events_received()
    assert events[0] == AckTimedOut("verb:hook", hook["msgid"])
    assert texts(events) == ["carry on"]
    assert isinstance(events[-1], StackIdle)
    assert proto.messages_to_send() == []
    assert proto.next_deadline() is None
    ack(proto, hook["msgid"], [say("too late")], now=T0 + 9)
    assert proto.events_received() == []


def test_awaiting_ack_tracks_pending_acks() -> None:
    proto = make_protocol()
    assert not proto.awaiting_ack
    proto.start(session_new_data(), T0)
    assert proto.awaiting_ack
    [new] = proto.messages_to_send()
    ack(proto, new["msgid"], [GATHER])
    assert not proto.awaiting_ack
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    assert proto.awaiting_ack
    proto.tick(T0 + ACK_TIMEOUT_S)
    assert not proto.awaiting_ack


def test_ack_to_unknown_msgid_is_ignored() -> None:
    proto = started([GATHER])
    ack(proto, "not-a-msgid", [say("x")])
    assert proto.events_received() == []
    assert proto.messages_to_send() == []


def test_ack_with_malformed_verbs_reports_error_and_continues() -> None:
    proto = started([GATHER, say("rest")])
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    [hook] = proto.messages_to_send()
    ack(proto, hook["msgid"], [{"no": 1, "verb_name": 2}])
    events = proto.events_received()
    assert events[0] == Acked("verb:hook", 0.0)
    assert isinstance(events[1], FrameRejected)
    assert texts(events) == ["rest"]
    [error] = proto.messages_to_send()
    assert error["type"] == "jambonz:error"


def test_every_acked_hook_reports_how_long_the_app_took() -> None:
    proto = started([GATHER])
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0 + 1.0)
    [hook] = proto.messages_to_send()
    ack(proto, hook["msgid"], [say("late"), GATHER], now=T0 + 1.4)
    events = proto.events_received()
    assert events[0] == Acked("verb:hook", pytest.approx(0.4))
    assert texts(events) == ["late", "gather"]
    ack(proto, hook["msgid"], [say("again")], now=T0 + 2.0)  # a second ack: unknown msgid
    assert proto.events_received() == []


def test_second_input_while_gather_hook_in_flight_goes_to_default_hook() -> None:
    proto = started([{**GATHER, "actionHook": "/g"}], input_hook="voice")
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    proto.send_input(HookKind.INPUT, DTMF_RESULT, T0)
    hooks = [m["hook"] for m in proto.messages_to_send()]
    assert hooks == ["/g", "voice"]


# --------------------------------------------------------------- transfer, play


def test_dial_blocks_and_reports_on_its_action_hook() -> None:
    dial = {
        "verb": "dial",
        "target": [{"type": "phone", "number": "+4930999"}],
        "actionHook": "dial",
    }
    proto = started([dial, say("after dial")])
    assert executed(proto.events_received()) == []
    assert proto.pending_hook(HookKind.TRANSFER) == "dial"
    result = {"dial_call_status": "no-answer", "dial_sip_status": 487, "dial_call_sid": "c2"}
    assert proto.send_input(HookKind.TRANSFER, result, T0)
    [msg] = proto.messages_to_send()
    assert msg["hook"] == "dial"
    assert_valid_callback("dial", msg["data"])
    ack(proto, msg["msgid"], [])
    assert texts(proto.events_received()) == ["after dial"]


def test_sip_refer_reports_on_its_action_hook() -> None:
    proto = started([{"sip:refer": {"referTo": "sip:agent@pbx", "actionHook": "refer"}}])
    assert proto.send_input(HookKind.TRANSFER, {"refer_status": 202}, T0)
    [msg] = proto.messages_to_send()
    assert msg["hook"] == "refer"
    assert_valid_callback("sip-refer", msg["data"])


def test_transfer_without_pending_dial_sends_nothing() -> None:
    proto = started([GATHER])
    assert proto.pending_hook(HookKind.TRANSFER) is None
    assert not proto.send_input(HookKind.TRANSFER, {"refer_status": 202}, T0)
    assert proto.messages_to_send() == []


def test_dial_without_action_hook_completes_on_result() -> None:
    proto = started([{"verb": "dial", "target": [{"type": "sip", "sipUri": "sip:a@b"}]}, say("x")])
    assert not proto.send_input(HookKind.TRANSFER, {"dial_call_status": "completed"}, T0)
    assert proto.messages_to_send() == []
    assert texts(proto.events_received()) == ["x"]


def test_play_action_hook_reports_play_failed_and_does_not_block() -> None:
    proto = started([{"play": {"url": "https://x/a.wav", "actionHook": "/play"}}, say("next")])
    assert texts(proto.events_received()) == []  # drained by started(); stack ran through
    assert proto.pending_hook(HookKind.PLAY) == "/play"
    assert proto.send_input(HookKind.PLAY, {"status": "fail", "reason": "playFailed"}, T0)
    [msg] = proto.messages_to_send()
    assert msg["hook"] == "/play"
    assert_valid_callback("play", msg["data"])
    assert not proto.send_input(HookKind.PLAY, {"reason": "playFailed"}, T0)


def test_play_without_action_hook_has_no_play_hook() -> None:
    proto = started([{"verb": "play", "url": "https://x/a.wav"}])
    assert not proto.send_input(HookKind.PLAY, {"reason": "playFailed"}, T0)
    assert proto.messages_to_send() == []


def test_non_blocking_verbs_run_through_to_idle() -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    [new] = proto.messages_to_send()
    verbs = [
        {"verb": "config", "notifyEvents": True},
        say("a"),
        {"verb": "play", "url": "https://x/a.wav"},
        {"verb": "tag", "data": {"k": "v"}},
        {"verb": "dtmf", "dtmf": "1", "duration": 250},
        {"verb": "sip:request", "method": "INFO", "body": "{}"},
    ]
    ack(proto, new["msgid"], verbs)
    events = proto.events_received()
    assert executed(events) == verbs
    assert events[-1] == StackIdle()
    assert sum(isinstance(e, StackIdle) for e in events) == 1


# ------------------------------------------------------------------- redirect


def test_redirect_replace_while_blocked_on_gather_kills_it() -> None:
    proto = started([GATHER, say("never")])
    redirect(proto, [say("injected")], queue=False)
    events = proto.events_received()
    assert texts(events) == ["injected"]
    assert isinstance(events[-1], StackIdle)
    assert proto.pending_hook(HookKind.INPUT) == "voice"  # route default; no gather pending


def test_redirect_append_while_blocked_waits_for_the_gather() -> None:
    proto = started([GATHER, say("rest")])
    redirect(proto, [say("queued")], queue=True)
    assert proto.events_received() == []
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    [hook] = proto.messages_to_send()
    ack(proto, hook["msgid"], [])
    assert texts(proto.events_received()) == ["rest", "queued"]


def test_hook_ack_verbs_replace_commands_queued_meanwhile() -> None:
    proto = started([GATHER])
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    [hook] = proto.messages_to_send()
    redirect(proto, [say("queued")], queue=True)
    ack(proto, hook["msgid"], [say("answer")])
    assert texts(proto.events_received()) == ["answer"]


@pytest.mark.parametrize("queue", [True, False])
def test_redirect_while_idle_runs_at_once(queue: bool) -> None:
    proto = started([say("hello")])
    redirect(proto, [{"say": {"text": "pushed"}}, {"gather": {"actionHook": "voice"}}], queue=queue)
    events = proto.events_received()
    assert texts(events) == ["pushed", "gather"]
    assert not any(isinstance(e, StackIdle) for e in events)


def test_stack_idle_is_emitted_once_per_transition() -> None:
    proto = started([say("hello")])
    redirect(proto, [say("one")], queue=True)
    assert proto.events_received()[-1] == StackIdle()
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    [hook] = proto.messages_to_send()
    ack(proto, hook["msgid"], [])
    assert proto.events_received() == [Acked("verb:hook", 0.0)]  # still idle: no new transition
    ack_frame_verbs = [say("two")]
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    [hook] = proto.messages_to_send()
    ack(proto, hook["msgid"], ack_frame_verbs)
    assert proto.events_received() == [
        Acked("verb:hook", 0.0),
        VerbExecuted(say("two")),
        StackIdle(),
    ]


def test_ack_of_an_idle_input_hook_with_verbs_runs_them() -> None:
    proto = started([say("hello")])
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    [hook] = proto.messages_to_send()
    ack(proto, hook["msgid"], [say("reply"), GATHER])
    assert texts(proto.events_received()) == ["reply", "gather"]


def test_redirect_call_hook_asks_the_app_with_session_redirect() -> None:
    """@jambonz/sdk injectRedirect: `{call_hook}` -> `session:redirect` on that hook; the ack's
    verbs replace the stack and kill the gather in progress (feature-server `_lccCallHook`)."""
    proto = started([GATHER, say("after the gather")])
    command(proto, "redirect", {"call_hook": "/new-app"})
    assert proto.events_received() == []
    [msg] = proto.messages_to_send()
    assert_envelope(msg, "session:redirect")
    assert msg["hook"] == "/new-app"
    assert msg["data"]["call_status"] == "in-progress"
    assert msg["data"]["customerData"] == session_new_data()["customerData"]
    assert_valid_callback("session-redirect", msg["data"])
    assert proto.awaiting_ack
    assert proto.pending_hook(HookKind.INPUT) == "voice"  # the gather runs until the ack
    ack(proto, msg["msgid"], [say("new app"), GATHER], now=T0 + 0.2)
    events = proto.events_received()
    assert events[0] == Acked("session:redirect", pytest.approx(0.2))
    assert texts(events) == ["new app", "gather"]
    assert not proto.awaiting_ack


def test_redirect_call_hook_with_an_empty_ack_changes_nothing() -> None:
    proto = started([GATHER])
    command(proto, "redirect", {"call_hook": {"url": "/other", "method": "POST"}})
    [msg] = proto.messages_to_send()
    assert msg["hook"] == "/other"
    ack(proto, msg["msgid"], None)
    assert executed(proto.events_received()) == []
    assert proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)  # the same gather takes input


def test_redirect_parent_call_runs_the_inline_application() -> None:
    proto = started([GATHER])
    command(proto, "redirect", {"parent_call": [say("inline"), {"hangup": {}}]})
    assert texts(proto.events_received()) == ["inline", "hangup"]
    assert proto.hung_up


def test_redirect_of_a_child_leg_only_is_unsupported() -> None:
    proto = started([GATHER])
    command(proto, "redirect", {"child_call_hook": "/child"})
    assert proto.events_received() == [CommandIgnored("redirect", "unsupported")]
    assert proto.messages_to_send() == []


def test_tag_command_replaces_customer_data_like_the_tag_verb() -> None:
    """@jambonz/sdk injectTag: the next hook payload carries the new customerData."""
    proto = started([GATHER])
    command(proto, "tag", {"segment": "gold", "ticket": 7})
    assert executed(proto.events_received()) == [
        {"verb": "tag", "data": {"segment": "gold", "ticket": 7}}
    ]
    assert proto.customer_data == {"segment": "gold", "ticket": 7}
    assert proto.send_input(HookKind.INPUT, DTMF_RESULT, T0)
    [hook] = proto.messages_to_send()
    assert hook["data"]["customerData"] == {"segment": "gold", "ticket": 7}


def test_tag_command_without_an_object_is_rejected() -> None:
    proto = started([GATHER])
    command(proto, "tag", ["not", "an", "object"])
    [error] = proto.messages_to_send()
    assert error["type"] == "jambonz:error"
    assert "data must be an object" in error["data"]["details"]


def test_config_only_app_then_queued_commands_without_hook_acks() -> None:
    """peers.md: ack `[{"config":{"notifyEvents":true}}]`, then only `command redirect`
    `queueCommand:true` in keyed form, hooks never acked."""
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    [new] = proto.messages_to_send()
    ack(proto, new["msgid"], [{"config": {"notifyEvents": True}}])
    events = proto.events_received()
    assert isinstance(events[0], SessionAccepted)
    assert executed(events) == [{"verb": "config", "notifyEvents": True}]
    assert events[-1] == StackIdle()
    proto.messages_to_send()

    def push(verbs: list[Any], now: float) -> None:
        frame = {"type": "command", "command": "redirect", "queueCommand": True, "data": verbs}
        proto.receive_text(json.dumps(frame), now)  # no msgid

    gather = {"gather": {"input": ["speech"], "actionHook": "voice", "timeout": 10.0}}
    push([{"say": {"text": "How can I help?"}}, gather], T0 + 1)
    assert texts(proto.events_received()) == ["How can I help?", "gather"]
    assert proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0 + 3)
    [hook] = proto.messages_to_send()
    assert hook["hook"] == "voice"
    push([{"say": {"text": "Sure."}}, gather], T0 + 3.5)
    assert proto.events_received() == []  # the gather completes only when its hook resolves
    proto.tick(T0 + 3 + ACK_TIMEOUT_S)
    events = proto.events_received()
    assert events[0] == AckTimedOut("verb:hook", hook["msgid"])
    assert texts(events) == ["Sure.", "gather"]
    assert proto.messages_to_send() == []


# ------------------------------------------------------------------- commands


def test_config_command_executes_without_touching_the_stack() -> None:
    proto = started([GATHER, say("rest")])
    command(proto, "config", {"synthesizer": {"vendor": "google", "language": "de-DE"}})
    assert proto.events_received() == [
        VerbExecuted({"verb": "config", "synthesizer": {"vendor": "google", "language": "de-DE"}})
    ]
    assert proto.pending_hook(HookKind.INPUT) == "voice"
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    [hook] = proto.messages_to_send()
    ack(proto, hook["msgid"], [])
    assert texts(proto.events_received()) == ["rest"]


def test_record_command_becomes_config_record() -> None:
    proto = started([say("x")])
    data = {"action": "startCallRecording", "recordingID": "r1", "siprecServerURL": "sip:rec@x"}
    command(proto, "record", data)
    assert proto.events_received() == [VerbExecuted({"verb": "config", "record": data})]


@pytest.mark.parametrize(
    "data",
    [
        {
            "sip_request": {
                "method": "INFO",
                "content_type": "application/json",
                "content": '{"a":1}',
                "headers": {"X-Meta": "1"},
            }
        },
        {
            "method": "INFO",
            "content_type": "application/json",
            "content": '{"a":1}',
            "headers": {"X-Meta": "1"},
        },
    ],
)
def test_sip_request_command_both_shapes(data: dict[str, Any]) -> None:
    proto = started([say("x")])
    command(proto, "sip:request", data)
    assert proto.events_received() == [
        VerbExecuted(
            {
                "verb": "sip:request",
                "method": "INFO",
                "body": '{"a":1}',
                "headers": {"X-Meta": "1", "Content-Type": "application/json"},
            }
        )
    ]


@pytest.mark.parametrize(
    ("data", "duration"),
    [
        ({"dtmf": {"digit": "5", "duration": 400}}, 400),
        ({"digit": "5", "duration": 400.0}, 400.0),
        ({"digit": "5"}, 250),
    ],
)
def test_dtmf_command_both_shapes(data: dict[str, Any], duration: float) -> None:
    proto = started([say("x")])
    command(proto, "dtmf", data)
    assert proto.events_received() == [
        VerbExecuted({"verb": "dtmf", "dtmf": "5", "duration": duration})
    ]


def test_call_status_completed_command_is_a_hangup() -> None:
    proto = started([GATHER, say("never")])
    command(proto, "call:status", {"call_status": "completed"})
    assert proto.events_received() == [VerbExecuted({"verb": "hangup"})]
    assert proto.hung_up
    assert not proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)


def test_call_status_no_answer_is_ignored_on_an_answered_call() -> None:
    proto = started([GATHER])
    command(proto, "call:status", {"call_status": "no-answer"})
    assert proto.events_received() == [
        CommandIgnored("call:status", "no effect on an answered call")
    ]


@pytest.mark.parametrize("name", ["whisper", "mute:status", "made-up"])
def test_unsupported_commands_are_ignored_without_error(name: str) -> None:
    proto = started([GATHER])
    command(proto, name, {"x": 1})
    assert proto.events_received() == [CommandIgnored(name, "unsupported")]
    assert proto.messages_to_send() == []


def test_command_for_another_leg_is_ignored() -> None:
    proto = started([GATHER])
    proto.receive_message(
        {"type": "command", "command": "redirect", "callSid": "other", "data": [say("x")]}, T0
    )
    assert proto.events_received() == [CommandIgnored("redirect", "other call leg")]


def test_command_with_own_call_sid_and_msgid_is_executed() -> None:
    proto = started([GATHER])
    proto.receive_message(
        {
            "type": "command",
            "command": "redirect",
            "msgid": "abc",
            "callSid": CALL_SID,
            "data": [say("x")],
        },
        T0,
    )
    assert texts(proto.events_received()) == ["x"]
    assert proto.messages_to_send() == []  # commands are never acked


def test_commands_before_session_ack_are_ignored() -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    proto.messages_to_send()
    redirect(proto, [say("early")], queue=True)
    assert proto.events_received() == [CommandIgnored("redirect", "call not active")]


# ------------------------------------------------------------ bargeIn, tag


def test_sticky_background_barge_in_hook() -> None:
    proto = started(
        [{"config": {"bargeIn": {"enable": True, "sticky": True, "actionHook": "barge"}}}],
        input_hook="voice",
    )
    for _ in range(2):
        assert proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    hooks = [m["hook"] for m in proto.messages_to_send()]
    assert hooks == ["barge", "barge"]


def test_non_sticky_barge_in_is_used_once() -> None:
    proto = started([{"config": {"bargeIn": {"enable": True, "actionHook": "barge"}}}])
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    assert [m["hook"] for m in proto.messages_to_send()] == ["barge", "voice"]


def test_foreground_gather_takes_precedence_over_barge_in() -> None:
    proto = started(
        [
            {"config": {"bargeIn": {"enable": True, "sticky": True, "actionHook": "barge"}}},
            {**GATHER, "actionHook": "/g"},
        ]
    )
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    [msg] = proto.messages_to_send()
    assert msg["hook"] == "/g"


def test_barge_in_disable_removes_the_background_hook() -> None:
    proto = started([{"config": {"bargeIn": {"enable": True, "sticky": True, "actionHook": "b"}}}])
    command(proto, "config", {"bargeIn": {"enable": False}})
    proto.events_received()
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    [msg] = proto.messages_to_send()
    assert msg["hook"] == "voice"


def test_background_hook_ack_with_verbs_kills_the_current_gather() -> None:
    proto = started([{"config": {"bargeIn": {"enable": True, "sticky": True, "actionHook": "b"}}}])
    redirect(proto, [{"verb": "gather", "timeout": 5}, say("rest")], queue=True)
    proto.events_received()
    assert proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)  # gather has no actionHook
    [msg] = proto.messages_to_send()
    assert msg["hook"] == "b"
    ack(proto, msg["msgid"], [say("answer")])
    assert texts(proto.events_received()) == ["answer"]


def test_tag_sets_customer_data_in_later_payloads() -> None:
    proto = started([{"tag": {"data": {"crm": {"tier": "gold"}}}}, GATHER])
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    [msg] = proto.messages_to_send()
    assert msg["data"]["customerData"] == {"crm": {"tier": "gold"}}
    assert proto.customer_data == {"crm": {"tier": "gold"}}
    ack(proto, msg["msgid"], [])
    proto.end("caller", T0 + 3)
    status = next(m for m in proto.messages_to_send() if m["type"] == "call:status")
    assert status["data"]["customerData"] == {"crm": {"tier": "gold"}}


def test_customer_data_spelled_snake_case_in_session_new_is_carried() -> None:
    data = session_new_data()
    data["customer_data"] = data.pop("customerData")
    proto = make_protocol()
    proto.start(data, T0)
    [new] = proto.messages_to_send()
    ack(proto, new["msgid"], [GATHER])
    [status] = proto.messages_to_send()
    assert status["data"]["customerData"] == session_new_data()["customerData"]


# ---------------------------------------------------------------- hangup, end


def test_hangup_clears_the_stack_and_end_sends_completed() -> None:
    proto = started([])  # rejected: needs verbs
    assert proto.ended
    proto = started([say("bye"), {"hangup": {"headers": {"X-Reason": "done"}}}, say("never")])
    assert proto.hung_up
    assert not proto.ended
    redirect(proto, [say("after hangup")], queue=False)
    assert proto.events_received() == [CommandIgnored("redirect", "call not active")]
    proto.end("jambonz", T0 + 42.7)
    [status] = proto.messages_to_send()
    assert_envelope(status, "call:status")
    data = status["data"]
    assert data["call_status"] == "completed"
    assert data["call_termination_by"] == "jambonz"
    assert data["duration"] == 42
    assert isinstance(data["duration"], int)
    assert data["sip_status"] == 200
    assert_valid_callback("call-status", data)
    assert proto.events_received() == [CloseRequested(1000)]
    assert proto.ended


def test_hangup_verb_events_in_order() -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    [new] = proto.messages_to_send()
    ack(proto, new["msgid"], [say("bye"), {"verb": "hangup"}, say("never")])
    events = proto.events_received()
    assert texts(events) == ["bye", "hangup"]
    assert not any(isinstance(e, StackIdle) for e in events)


def test_end_by_caller_while_gather_pending() -> None:
    proto = started([GATHER])
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0)
    proto.messages_to_send()
    proto.end("caller", T0 + 10)
    [status] = proto.messages_to_send()
    assert status["data"]["call_termination_by"] == "caller"
    assert_valid_callback("call-status", status["data"])
    assert proto.events_received() == [CloseRequested(1000)]
    assert proto.next_deadline() is None
    proto.tick(T0 + 100)
    proto.receive_text("garbage", T0 + 100)
    command(proto, "redirect", [say("x")])
    proto.end("caller", T0 + 101)
    assert proto.events_received() == []
    assert proto.messages_to_send() == []
    assert not proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0 + 100)


def test_end_before_session_ack_still_reports_completed() -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    proto.messages_to_send()
    proto.end("caller", T0 + 1)
    [status] = proto.messages_to_send()
    assert status["data"]["call_status"] == "completed"
    assert_valid_callback("call-status", status["data"])
    assert proto.events_received() == [CloseRequested(1000)]


def test_end_without_start_only_closes() -> None:
    proto = make_protocol()
    proto.end("caller", T0)
    assert proto.messages_to_send() == []
    assert proto.events_received() == [CloseRequested(1000)]


def test_send_call_status_generic() -> None:
    proto = started([GATHER])
    proto.send_call_status("ringing", {"sip_status": 180, "sip_reason": "Ringing"}, T0)
    [msg] = proto.messages_to_send()
    assert msg["data"]["call_status"] == "ringing"
    assert msg["data"]["sip_status"] == 180
    assert_valid_callback("call-status", msg["data"])
    proto.send_input(HookKind.INPUT, TIMEOUT_RESULT, T0)
    [hook] = proto.messages_to_send()
    assert hook["data"]["call_status"] == "ringing"


# ------------------------------------------------------------- invalid frames


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('"ack"', "not a JSON object"),
        ('{"msgid": "x"}', "without type"),
        ('{"type": "session:new", "data": {}}', "unknown message type"),
        ('{"type": "command", "data": []}', "without command name"),
        ('{"type": "command", "command": "redirect"}', "without data"),
        ('{"type": "command", "command": "redirect", "data": [{"a": 1, "b": 2}]}', "verb"),
        ('{"type": "command", "command": "redirect", "data": "say"}', "must be array"),
        ('{"type": "command", "command": "dtmf", "data": {"duration": 3}}', "digit"),
        ('{"type": "command", "command": "sip:request", "data": {"body": "x"}}', "method"),
        ('{"type": "command", "command": "config", "data": [1]}', "must be an object"),
        ('{"type": "ack", "data": []}', "without msgid"),
    ],
)
def test_invalid_frames_queue_jambonz_error(frame: str | bytes, reason: str) -> None:
    proto = started([GATHER])
    proto.receive_text(frame, T0)
    [event] = proto.events_received()
    assert isinstance(event, FrameRejected)
    assert reason in event.reason
    [error] = proto.messages_to_send()
    assert_envelope(error, "jambonz:error")
    assert error["data"]["msg"] == "InvalidMessage"
    assert error["data"]["details"] == event.reason
    assert isinstance(error["data"]["content"], str)
    assert proto.pending_hook(HookKind.INPUT) == "voice"  # the call is unaffected


def test_jambonz_error_content_is_truncated() -> None:
    proto = started([GATHER])
    proto.receive_text("x" * 100_000, T0)
    [error] = proto.messages_to_send()
    assert 0 < len(error["data"]["content"]) <= 4096


def test_receive_message_rejects_non_objects() -> None:
    proto = started([GATHER])
    proto.receive_message(["type", "ack"], T0)
    assert isinstance(proto.events_received()[0], FrameRejected)
    assert proto.messages_to_send()[0]["type"] == "jambonz:error"


def test_deeply_nested_json_does_not_raise() -> None:
    proto = started([GATHER])
    proto.receive_text("[" * 100_000 + "]" * 100_000, T0)
    assert isinstance(proto.events_received()[0], FrameRejected)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["type", "msgid", "data", "command", "queueCommand", "callSid", "verb"])
            | st.text(max_size=6),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)
frames = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["ack", "command", "verb:hook", ""]) | json_values,
        "command": st.sampled_from(["redirect", "config", "dtmf", "sip:request", "call:status"])
        | json_values,
        "data": json_values,
    },
    optional={"msgid": st.sampled_from(["m1", "m2", "m3"]) | json_values},
)


def assert_all_sent_well_formed(proto: CallProtocol) -> None:
    for msg in proto.messages_to_send():
        assert {"type", "msgid", "call_sid", "data"} <= msg.keys()
        assert msg["call_sid"] == CALL_SID
        json.dumps(msg)


@settings(max_examples=200)
@given(st.text(max_size=200) | st.binary(max_size=100))
def test_arbitrary_text_never_raises(text: str | bytes) -> None:
    proto = started([GATHER])
    proto.receive_text(text, T0)
    assert_all_sent_well_formed(proto)


@settings(max_examples=300)
@given(st.lists(json_values | frames, min_size=1, max_size=6), st.booleans())
def test_arbitrary_json_never_raises(messages: list[Any], accepted: bool) -> None:
    if accepted:
        proto = started([GATHER])
    else:
        proto = make_protocol()
        proto.start(session_new_data(), T0)
    for index, message in enumerate(messages):
        now = T0 + index
        proto.receive_text(json.dumps(message), now)
        proto.receive_message(message, now)
        proto.send_input(HookKind.INPUT, SPEECH_RESULT, now)
        proto.tick(now)
    for event in proto.events_received():
        if isinstance(event, VerbExecuted):
            assert isinstance(event.verb["verb"], str)
    assert_all_sent_well_formed(proto)


# ---------------------------------------------------------------- socket dropped / reconnect


def test_reconnect_resends_session_new_data_with_a_new_msgid_ack_required() -> None:
    proto = started([GATHER])
    proto.connection_lost(T0 + 1)
    assert proto.messages_to_send() == []
    msgid = proto.reconnected(T0 + 1.5)
    [reconnect] = proto.messages_to_send()
    assert_envelope(reconnect, "session:reconnect")
    assert reconnect["msgid"] == msgid == "m3"  # m1 session:new, m2 call:status in-progress
    assert reconnect["data"] == session_new_data() == proto.session_new_data
    assert_valid_callback("session-new", reconnect["data"])
    assert proto.awaiting_ack
    assert proto.next_deadline() == T0 + 1.5 + ACK_TIMEOUT_S
    ack(proto, reconnect["msgid"], [], now=T0 + 2)
    assert not proto.awaiting_ack
    assert proto.messages_to_send() == []
    assert proto.accepted


def test_messages_produced_while_disconnected_wait_for_the_reconnect_ack() -> None:
    proto = started([GATHER])
    proto.connection_lost(T0 + 1)
    proto.events_received()
    assert proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0 + 2)
    proto.send_call_status("in-progress", None, T0 + 2)
    assert proto.messages_to_send() == []
    assert proto.awaiting_ack
    assert proto.next_deadline() is None  # a held hook's budget has not started
    proto.tick(T0 + 60)
    assert proto.events_received() == []
    proto.reconnected(T0 + 60)
    [reconnect] = proto.messages_to_send()
    assert reconnect["type"] == "session:reconnect"
    assert proto.next_deadline() == T0 + 60 + ACK_TIMEOUT_S
    ack(proto, reconnect["msgid"], None, now=T0 + 61)
    hook, status = proto.messages_to_send()
    assert (hook["type"], hook["hook"], status["type"]) == ("verb:hook", "voice", "call:status")
    assert hook["data"]["speech"] == SPEECH_RESULT["speech"]
    assert proto.next_deadline() == T0 + 61 + ACK_TIMEOUT_S  # the budget starts when sent
    ack(proto, hook["msgid"], [say("answer")], now=T0 + 62)
    assert texts(proto.events_received()) == ["answer"]


def test_verbs_in_a_reconnect_ack_are_ignored() -> None:
    proto = started([say("hello"), GATHER])
    proto.connection_lost(T0 + 1)
    proto.reconnected(T0 + 2)
    [reconnect] = proto.messages_to_send()
    proto.events_received()
    ack(proto, reconnect["msgid"], [say("hello again"), {"verb": "hangup"}], now=T0 + 2)
    assert proto.events_received() == []
    assert not proto.hung_up
    assert proto.pending_hook(HookKind.INPUT) == "voice"  # the gather still waits for input


def test_hook_in_flight_when_the_socket_drops_is_abandoned_and_the_stack_carries_on() -> None:
    proto = started([GATHER, say("after the gather")])
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0 + 1)
    [hook] = proto.messages_to_send()
    proto.connection_lost(T0 + 2)
    events = proto.events_received()
    assert texts(events) == ["after the gather"]
    assert isinstance(events[-1], StackIdle)
    assert not proto.awaiting_ack
    proto.reconnected(T0 + 3)
    [reconnect] = proto.messages_to_send()
    ack(proto, hook["msgid"], [say("late ack on the new socket")], now=T0 + 3)
    assert proto.events_received() == []  # the abandoned hook's ack is unknown now
    ack(proto, reconnect["msgid"], None, now=T0 + 3)
    assert proto.messages_to_send() == []


def test_reconnect_before_session_ack_rekeys_the_pending_ack() -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    [new] = proto.messages_to_send()
    proto.connection_lost(T0 + 1)
    msgid = proto.reconnected(T0 + 2)
    [reconnect] = proto.messages_to_send()
    assert reconnect["msgid"] == msgid != new["msgid"]
    assert reconnect["data"] == new["data"]
    assert proto.next_deadline() == T0 + ACK_TIMEOUT_S  # the original budget keeps running
    ack(proto, new["msgid"], [say("to the old msgid")], now=T0 + 2.5)
    assert proto.events_received() == []
    assert not proto.accepted
    ack(proto, reconnect["msgid"], [say("welcome"), GATHER], now=T0 + 3)
    events = proto.events_received()
    assert events[0] == SessionAccepted(3.0)
    assert texts(events) == ["welcome", "gather"]
    [status] = proto.messages_to_send()
    assert status["data"]["call_status"] == "in-progress"


def test_reconnect_before_session_ack_still_times_out_on_the_original_budget() -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    proto.messages_to_send()
    proto.connection_lost(T0 + 1)
    proto.reconnected(T0 + 2)
    [reconnect] = proto.messages_to_send()
    proto.connection_lost(T0 + 3)  # dropped again before any ack
    proto.reconnected(T0 + 4)
    [again] = proto.messages_to_send()
    assert again["msgid"] != reconnect["msgid"]
    proto.tick(T0 + ACK_TIMEOUT_S)
    assert proto.events_received() == [
        AckTimedOut("session:new", again["msgid"]),
        CloseRequested(1001),
    ]
    assert proto.ended


def test_reconnect_never_acked_drops_held_messages() -> None:
    proto = started([GATHER])
    proto.connection_lost(T0 + 1)
    proto.reconnected(T0 + 2)
    [reconnect] = proto.messages_to_send()
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0 + 3)
    proto.tick(T0 + 2 + ACK_TIMEOUT_S)
    events = proto.events_received()
    assert events[0] == AckTimedOut("session:reconnect", reconnect["msgid"])
    assert not proto.awaiting_ack
    assert proto.messages_to_send() == []
    proto.end("jambonz", T0 + 8)  # the driver ends the call; this goes out directly
    [status] = proto.messages_to_send()
    assert status["data"]["call_status"] == "completed"


def test_end_while_disconnected_hands_out_what_was_held() -> None:
    proto = started([GATHER])
    proto.connection_lost(T0 + 1)
    proto.send_input(HookKind.INPUT, DTMF_RESULT, T0 + 2)
    proto.end("caller", T0 + 3)
    hook, status = proto.messages_to_send()
    assert (hook["type"], status["type"]) == ("verb:hook", "call:status")
    assert proto.events_received()[-1] == CloseRequested(1000)
    assert proto.next_deadline() is None


def test_reconnect_without_a_lost_connection_does_nothing() -> None:
    proto = make_protocol()
    assert proto.reconnected(T0) is None
    proto.connection_lost(T0)  # before start: nothing to keep
    assert proto.reconnected(T0) is None
    proto = started([GATHER])
    assert proto.reconnected(T0) is None
    assert proto.messages_to_send() == []


# ---------------------------------------------------------------- app closed with 1000


def test_graceful_close_while_idle_hangs_up_at_once() -> None:
    proto = started([say("hello")])
    proto.closed_gracefully(T0 + 1)
    events = proto.events_received()
    assert texts(events) == ["hangup"]
    assert proto.hung_up
    proto.end("jambonz", T0 + 1)
    assert proto.messages_to_send() == []  # frames after a graceful close are dropped
    assert proto.events_received() == [CloseRequested(1000)]


def test_graceful_close_finishes_the_stack_then_hangs_up() -> None:
    proto = started([GATHER, say("goodbye")])
    proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0 + 1)
    assert [m["type"] for m in proto.messages_to_send()] == ["verb:hook"]
    proto.closed_gracefully(T0 + 2)  # the hook in flight completes empty
    assert texts(proto.events_received()) == ["goodbye", "hangup"]
    proto = started([say("hi"), GATHER, say("goodbye")])
    proto.closed_gracefully(T0 + 1)
    assert proto.events_received() == []  # the gather still waits for the caller
    assert not proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0 + 2)  # not reported ...
    assert texts(proto.events_received()) == ["goodbye", "hangup"]  # ... but completes it
    assert proto.messages_to_send() == []
    assert not proto.awaiting_ack


def test_graceful_close_before_session_ack_rejects_the_call() -> None:
    proto = make_protocol()
    proto.start(session_new_data(), T0)
    proto.messages_to_send()
    proto.closed_gracefully(T0 + 1)
    assert proto.events_received() == [CloseRequested(1001)]
    assert proto.ended
    proto.connection_lost(T0 + 2)
    assert proto.reconnected(T0 + 2) is None


# ------------------------------------------- redirect verb, sip:decline, unserved verbs


def accepted(
    verbs: list[Any], **kwargs: Any
) -> tuple[CallProtocol, list[Any], list[dict[str, Any]]]:
    """A protocol whose session:new was acked with `verbs`: it, the events and the frames that
    ack produced (session:new, call:status in-progress already left out)."""
    proto = make_protocol(**kwargs)
    proto.start(session_new_data(), T0)
    [msg] = proto.messages_to_send()
    proto.receive_message({"type": "ack", "msgid": msg["msgid"], "data": verbs}, T0)
    frames = [m for m in proto.messages_to_send() if m["type"] != "call:status"]
    events = [e for e in proto.events_received() if not isinstance(e, SessionAccepted)]
    return proto, events, frames


def test_redirect_verb_reports_its_action_hook_and_blocks_until_the_ack() -> None:
    """feature-server redirect.js: `performAction` sends `verb:hook` on the actionHook; a
    non-empty ack replaces the application."""
    proto, events, [hook] = accepted(
        [say("one"), {"verb": "redirect", "actionHook": "/next"}, say("dropped")]
    )
    assert texts(events) == ["one", "redirect"]
    assert_envelope(hook, "verb:hook")
    assert hook["hook"] == "/next"
    assert hook["data"]["call_sid"] == CALL_SID
    assert proto.awaiting_ack
    assert proto.pending_hook(HookKind.VERB) is None
    assert not proto.send_input(HookKind.VERB, {}, T0)
    ack(proto, hook["msgid"], [say("next app")])
    assert texts(proto.events_received()) == ["next app"]


def test_redirect_verb_with_an_empty_ack_goes_on_with_the_stack() -> None:
    proto, _, [hook] = accepted([{"redirect": {"actionHook": "/next"}}, say("two")])
    ack(proto, hook["msgid"], [])
    assert texts(proto.events_received()) == ["two"]


def test_redirect_verb_whose_hook_is_never_acked_carries_on_after_the_budget() -> None:
    proto, _, [hook] = accepted([{"redirect": {"actionHook": "/next"}}, say("two")])
    proto.tick(T0 + ACK_TIMEOUT_S)
    events = proto.events_received()
    assert events[0] == AckTimedOut("verb:hook", hook["msgid"])
    assert texts(events) == ["two"]


def test_sip_decline_ends_the_call_like_hangup() -> None:
    proto, events, _ = accepted(
        [{"verb": "sip:decline", "status": 486, "reason": "Busy Here"}, say("never")]
    )
    assert texts(events) == ["sip:decline"]
    assert proto.hung_up


@pytest.mark.parametrize(
    ("verb", "schema", "result"),
    [
        ({"verb": "enqueue", "name": "support"}, "enqueue", {"queue_result": "error"}),
        ({"verb": "dequeue", "name": "support"}, "dequeue", {"dequeue_result": "timeout"}),
        ({"verb": "conference", "name": "room-1"}, "conference", {}),
        ({"verb": "llm", "vendor": "openai", "llmOptions": {}}, "llm", {}),
        ({"openai_s2s": {"llmOptions": {}}}, "llm", {"completion_reason": "connection failure"}),
        ({"verb": "listen", "url": "wss://x.example/audio"}, "listen", {}),
        ({"verb": "message", "to": "+15551230000", "from": "+15551230001"}, "message", {}),
    ],
)
def test_unserved_blocking_verb_reports_its_hook_as_failed_at_once(
    verb: dict[str, Any], schema: str, result: dict[str, Any]
) -> None:
    """A verb the bridge cannot serve never leaves the call waiting for a hook that never comes:
    its actionHook reports the failure feature-server would, and the app's ack decides."""
    body = next(iter(verb.values())) if "verb" not in verb else verb
    body["actionHook"] = "/after"
    proto, events, [hook] = accepted([verb, say("not yet")])
    assert [v["verb"] for v in executed(events)] == [
        "llm" if "openai_s2s" in verb else verb["verb"]
    ]
    assert_envelope(hook, "verb:hook")
    assert hook["hook"] == "/after"
    assert result.items() <= hook["data"].items()
    assert_valid_callback(schema, hook["data"])
    ack(proto, hook["msgid"], [say("sorry"), GATHER])
    assert texts(proto.events_received()) == ["sorry", "gather"]


def test_unserved_verb_without_a_hook_lets_the_stack_go_on() -> None:
    _, events, frames = accepted([{"verb": "enqueue", "name": "support"}, say("next")])
    assert texts(events) == ["enqueue", "next"]
    assert frames == []


def test_a_verb_a_mapping_serves_is_not_reported_as_failed() -> None:
    _, events, frames = accepted(
        [{"verb": "enqueue", "name": "support", "actionHook": "/q"}],
        serves=lambda verb: verb["verb"] == "enqueue",
    )
    assert texts(events) == ["enqueue"]
    assert frames == []


def test_unserved_verb_after_a_graceful_close_is_not_reported() -> None:
    proto = started([GATHER, {"verb": "enqueue", "name": "q", "actionHook": "/q"}, say("after")])
    proto.closed_gracefully(T0)
    proto.events_received()
    assert not proto.send_input(HookKind.INPUT, DTMF_RESULT, T0)  # completes the gather
    assert texts(proto.events_received()) == ["enqueue", "after", "hangup"]
    assert proto.messages_to_send() == []


def test_a_served_sip_request_reports_success_on_its_hook() -> None:
    """VAIC never answers sendMetaData: once it is out, the INFO's actionHook reports success."""
    info = {"verb": "sip:request", "method": "INFO", "body": "{}", "actionHook": "/info"}
    _, events, [hook] = accepted([info, say("after")], serves=lambda v: v["verb"] == "sip:request")
    assert texts(events) == ["sip:request"]
    assert hook["hook"] == "/info"
    assert hook["data"]["result"] == "success"
    assert_valid_callback("sip-request", hook["data"])


def test_an_unserved_sip_request_reports_failure_on_its_hook() -> None:
    notify = {"verb": "sip:request", "method": "NOTIFY", "actionHook": "/notify"}
    proto, _, [hook] = accepted([notify, say("after")])
    assert hook["data"]["result"] == "failed"
    assert_valid_callback("sip-request", hook["data"])
    ack(proto, hook["msgid"], None)
    assert texts(proto.events_received()) == ["after"]


# ---------------------------------------------------------------- snapshots (another instance)


def _moved(proto: CallProtocol, now: float) -> CallProtocol:
    """`proto`'s snapshot, through JSON, restored in "another process" whose clock reads 5."""
    snapshot = proto.snapshot(now)
    assert snapshot is not None
    counter = itertools.count(100)
    return CallProtocol.restore(
        json.loads(json.dumps(snapshot)), 5.0, msgid_factory=lambda: f"n{next(counter)}"
    )


def test_a_restored_call_reconnects_and_takes_the_input_its_gather_waited_for() -> None:
    proto = started([{"verb": "config", "bargeIn": {"enable": True, "sticky": True}}, GATHER])
    proto.receive_message({"type": "command", "command": "tag", "data": {"tier": "gold"}}, T0)
    proto.events_received()
    moved = _moved(proto, T0 + 30)
    assert moved.accepted and not moved.awaiting_ack
    assert moved.messages_to_send() == []  # nothing goes out before the socket is back
    assert moved.reconnected(5.0) == "n100"
    [reconnect] = moved.messages_to_send()
    assert_envelope(reconnect, "session:reconnect")
    assert reconnect["call_sid"] == CALL_SID
    assert reconnect["data"] == session_new_data()
    ack(moved, reconnect["msgid"], [], now=5.5)

    assert moved.pending_hook(HookKind.INPUT) == proto.pending_hook(HookKind.INPUT)
    assert moved.send_input(HookKind.INPUT, SPEECH_RESULT, 6.0)
    [hook] = moved.messages_to_send()
    assert (hook["type"], hook["hook"]) == ("verb:hook", "voice")
    assert hook["data"]["customerData"] == {"tier": "gold"}
    assert_valid_callback("gather", hook["data"])
    ack(moved, hook["msgid"], [say("answer")], now=6.5)
    assert texts(moved.events_received()) == ["answer"]
    moved.end("caller", 10.0)
    status = [m for m in moved.messages_to_send() if m["type"] == "call:status"][-1]
    assert status["data"]["duration"] == 35  # 30 s before the move, 5 s after


def test_a_hook_in_flight_at_the_move_is_abandoned_and_the_stack_goes_on() -> None:
    proto = started([GATHER, say("after the gather")])
    assert proto.send_input(HookKind.INPUT, SPEECH_RESULT, T0 + 1)
    proto.messages_to_send()
    moved = _moved(proto, T0 + 2)
    assert texts(moved.events_received()) == ["after the gather"]


def test_nothing_to_continue_is_no_snapshot() -> None:
    fresh = make_protocol()
    assert fresh.snapshot(T0) is None
    ended = started([GATHER])
    ended.end("caller", T0 + 1)
    assert ended.snapshot(T0 + 1) is None


@pytest.mark.parametrize("broken", [{}, {"call_sid": "x"}, {"stack": 3}])
def test_a_broken_protocol_snapshot_is_a_value_error(broken: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CallProtocol.restore(broken, 0.0)
