"""Flows of the simulated VG endpoint: parsing, node rendering, branching, wire formatting."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import ConfigError
from bridge.sim.flow import (
    FlowOptions,
    FlowRun,
    Node,
    NodeType,
    VerbForm,
    format_verbs,
    load_flows,
    parse_flow,
    reachable_batches,
    render_node,
)

FLOWS = load_flows()


def speech(text: str) -> dict[str, Any]:
    return {
        "reason": "speechDetected",
        "speech": {"is_final": True, "alternatives": [{"transcript": text, "confidence": 0.9}]},
    }


def dtmf(digits: str) -> dict[str, Any]:
    return {"reason": "dtmfDetected", "digits": digits}


def texts(verbs: list[dict[str, Any]]) -> list[str]:
    out = []
    for verb in verbs:
        if verb["verb"] == "say":
            out.append(verb["text"])
        elif verb["verb"] == "gather":
            out.append("? " + verb["say"]["text"])
        else:
            out.append(verb["verb"])
    return out


def node(node_type: str, **params: Any) -> Node:
    return Node("n", NodeType(node_type), params)


def test_shipped_flows_load_with_distinct_numbers() -> None:
    assert {
        "support",
        "menu",
        "media",
        "transfer_dial",
        "transfer_refer",
        "metadata",
        "session_config",
        "recording",
        "send_dtmf",
        "support_commands",
    } <= set(FLOWS)
    numbers = [n for flow in FLOWS.values() for n in flow.numbers]
    assert len(numbers) == len(set(numbers))


def test_say_renders_text_ssml_and_synthesizer() -> None:
    assert render_node(node("say", text="Hi")) == [{"verb": "say", "text": "Hi"}]
    synth = {"vendor": "microsoft", "language": "de-DE", "voice": "de-DE-KatjaNeural"}
    assert render_node(node("say", text="Hallo", ssml=True, synthesizer=synth)) == [
        {"verb": "say", "text": "<speak>Hallo</speak>", "synthesizer": synth}
    ]


def test_question_renders_gather_with_voice_hook_and_nested_prompt() -> None:
    verbs = render_node(node("question", prompt="Why?", input=["digits"], timeout=4, num_digits=1))
    assert verbs == [
        {
            "verb": "gather",
            "input": ["digits"],
            "actionHook": "voice",
            "timeout": 4,
            "numDigits": 1,
            "say": {"text": "Why?"},
        }
    ]


def test_transfer_renders_dial_and_refer() -> None:
    dial = render_node(node("transfer", mode="dial", number="+4989123456", headers={"X-A": "1"}))
    assert dial == [
        {
            "verb": "dial",
            "target": [{"type": "phone", "number": "+4989123456"}],
            "actionHook": "dial",
            "headers": {"X-A": "1"},
        }
    ]
    sip = render_node(node("transfer", mode="dial", sipUri="sip:a@b.example"))
    assert sip[0]["target"] == [{"type": "sip", "sipUri": "sip:a@b.example"}]
    refer = render_node(node("transfer", mode="refer", referTo="sip:a@b", referredBy="sip:c@d"))
    assert refer == [
        {
            "verb": "sip:refer",
            "referTo": "sip:a@b",
            "actionHook": "refer",
            "referredBy": "sip:c@d",
        }
    ]


def test_hangup_metadata_recording_dtmf_play_config() -> None:
    assert render_node(node("hangup", reason="done")) == [
        {"verb": "hangup", "headers": {"X-Reason": "done"}}
    ]
    assert render_node(node("hangup")) == [{"verb": "hangup"}]
    (info,) = render_node(node("send_metadata", data={"a": 1, "b": "x"}))
    assert info["verb"] == "sip:request" and info["method"] == "INFO"
    assert info["headers"] == {"Content-Type": "application/json"}
    assert json.loads(info["body"]) == {"a": 1, "b": "x"}
    (start,) = render_node(
        node("call_recording", action="start", recordingID="r1", siprecServerURL="sip:rec@x")
    )
    assert start == {
        "verb": "config",
        "record": {
            "action": "startCallRecording",
            "type": "siprec",
            "recordingID": "r1",
            "siprecServerURL": "sip:rec@x",
        },
    }
    assert render_node(node("call_recording", action="stop")) == [
        {"verb": "config", "record": {"action": "stopCallRecording"}}
    ]
    assert render_node(node("dtmf", digits="12#", duration=250)) == [
        {"verb": "dtmf", "dtmf": "12#", "duration": 250}
    ]
    assert render_node(node("play", url="https://x/a.wav", hook="play")) == [
        {"verb": "play", "url": "https://x/a.wav", "actionHook": "play"}
    ]
    assert render_node(node("set_session_config", bargeIn={"enable": True})) == [
        {"verb": "config", "bargeIn": {"enable": True}}
    ]
    assert render_node(node("goto", target="x")) == []


def test_support_flow_batches_end_at_the_blocking_verb() -> None:
    run = FlowRun(FLOWS["support"])
    assert texts(run.start()) == ["Welcome to ACME support.", "? How can I help you?"]
    assert texts(run.receive_hook("voice", speech("I want to PAY"))) == [
        "Sure. Let's pay your bill.",
        "? Please tell me the amount.",
    ]
    assert texts(run.receive_hook("voice", speech("fifty"))) == [
        "Thank you for calling. Goodbye.",
        "hangup",
    ]
    assert run.pending is not None and run.pending.type is NodeType.HANGUP


def test_timeout_reprompts_and_default_echoes_the_transcript() -> None:
    run = FlowRun(FLOWS["support"])
    run.start()
    assert texts(run.receive_hook("voice", {"reason": "timeout"})) == [
        "Sorry, I did not hear you.",
        "? How can I help you?",
    ]
    assert texts(run.receive_hook("voice", speech("opening hours"))) == [
        "You said opening hours.",
        "? How can I help you?",
    ]


def test_digit_branches_and_unknown_hooks() -> None:
    run = FlowRun(FLOWS["menu"])
    run.start()
    assert run.receive_hook("dial", {}) == []
    assert texts(run.receive_hook("voice", dtmf("7"))) == [
        "That is not a valid choice.",
        "? For billing press 1. For sales press 2.",
    ]
    assert texts(run.receive_hook("voice", dtmf("2"))) == ["You chose sales. Goodbye.", "hangup"]
    # the question was answered: a second hook on it changes nothing
    assert run.receive_hook("voice", dtmf("1")) == []


def test_transfer_result_branches() -> None:
    failed = FlowRun(FLOWS["transfer_dial"])
    failed.start()
    assert texts(failed.receive_hook("dial", {"dial_call_status": "no-answer"})) == [
        "Sorry, no agent is available right now.",
        "hangup",
    ]
    ok = FlowRun(FLOWS["transfer_dial"])
    ok.start()
    assert ok.receive_hook("dial", {"dial_call_status": "completed"}) == [
        {"verb": "hangup", "headers": {"X-Reason": "transferred"}}
    ]
    refer = FlowRun(FLOWS["transfer_refer"])
    refer.start()
    assert texts(refer.receive_hook("refer", {"refer_status": 603})) == [
        "The transfer did not work.",
        "hangup",
    ]


def test_play_hook_only_acts_on_failure() -> None:
    run = FlowRun(FLOWS["media"])
    run.start()
    assert run.receive_hook("play", {"reason": "playCompleted"}) == []
    assert texts(run.receive_hook("play", {"reason": "playFailed", "status": "fail"})) == [
        "Sorry, the announcement is not available.",
        "? Did you understand the announcement?",
    ]


def test_metadata_substitutes_the_last_input() -> None:
    run = FlowRun(FLOWS["metadata"])
    run.start()
    verbs = run.receive_hook("voice", speech("why so high"))
    assert json.loads(verbs[0]["body"]) == {"lastUtterance": "why so high"}


def test_format_verbs_keyed_and_floats() -> None:
    verbs = FlowRun(FLOWS["support"]).start()
    keyed = format_verbs(verbs, FlowOptions(verb_form=VerbForm.KEYED, floats=True))
    assert keyed[0] == {"say": {"text": "Welcome to ACME support."}}
    gather = keyed[1]["gather"]
    assert gather["timeout"] == 5.0 and isinstance(gather["timeout"], float)
    assert "verb" not in gather
    plain = format_verbs(
        [{"verb": "config", "bargeIn": {"enable": True}}], FlowOptions(floats=True)
    )
    assert plain == [{"verb": "config", "bargeIn": {"enable": True}}]
    assert plain[0]["bargeIn"]["enable"] is True
    assert format_verbs(verbs, FlowOptions())[1]["timeout"] == 5
    assert isinstance(format_verbs(verbs, FlowOptions())[1]["timeout"], int)


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"name": "x", "nodes": [{"id": "a", "type": "wave"}]}, "nodes[0].type"),
        ({"name": "x", "nodes": [{"id": "a", "type": "say"}]}, "nodes[0].text"),
        (
            {"name": "x", "nodes": [{"id": "a", "type": "say", "text": "t", "next": "b"}]},
            "nodes[0].next",
        ),
        (
            {"name": "x", "nodes": [{"id": "a", "type": "say", "text": "t", "voice": "v"}]},
            "nodes[0].voice",
        ),
        ({"name": "x", "nodes": [{"id": "a", "type": "transfer", "mode": "dial"}]}, "nodes[0]"),
        ({"name": "x", "reply": "later", "nodes": [{"id": "a", "type": "hangup"}]}, "reply"),
        ({"name": "x", "nodes": [{"id": "a", "type": "say", "text": "t", "next": "a"}]}, "nodes"),
        ({"name": "x", "nodes": [{"id": "a", "type": "goto", "target": "a"}]}, "nodes"),
        ({"name": "x", "color": 1, "nodes": [{"id": "a", "type": "hangup"}]}, "color"),
    ],
)
def test_invalid_flows_name_the_field(doc: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_flow(doc, "f.yaml")
    assert caught.value.path == path
    assert caught.value.file == "f.yaml"


def test_every_flow_has_reachable_batches_each_with_verbs() -> None:
    for flow in FLOWS.values():
        batches = reachable_batches(flow)
        assert batches and all(batches), flow.name


hook_data = st.fixed_dictionaries(
    {},
    optional={
        "reason": st.sampled_from(["speechDetected", "dtmfDetected", "timeout", "playFailed", "x"]),
        "digits": st.text(max_size=4),
        "speech": st.one_of(
            st.none(),
            st.text(),
            st.fixed_dictionaries(
                {"alternatives": st.lists(st.fixed_dictionaries({"transcript": st.text()}))}
            ),
        ),
        "dial_call_status": st.sampled_from(["completed", "no-answer", "busy"]),
        "refer_status": st.one_of(st.integers(), st.text(max_size=3)),
    },
)


@given(
    flow=st.sampled_from(sorted(FLOWS)),
    hooks=st.lists(
        st.tuples(st.sampled_from(["voice", "dial", "refer", "play", "x"]), hook_data), max_size=6
    ),
)
def test_any_hook_sequence_gives_verb_lists(
    flow: str, hooks: list[tuple[str, dict[str, Any]]]
) -> None:
    run = FlowRun(FLOWS[flow])
    assert run.start()
    for hook, data in hooks:
        verbs = run.receive_hook(hook, data)
        assert all(isinstance(v, dict) and "verb" in v for v in verbs)
