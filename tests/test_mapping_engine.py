"""Engine: matching, several nodes per verb, unmapped/error results, template semantics."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.mapping import Engine, Translation, load_mappings

CTX: dict[str, Any] = {
    "route": "r",
    "call_sid": "cs",
    "conversation_id": "conv",
    "account_sid": "acc",
    "application_sid": "app",
    "caller_e164": None,
    "number_metadata": None,
    "sip_headers": {},
    "language": "en-US",
    "transfer_verb": None,
    "default_region": "DE",
}

ENGINE = Engine(load_mappings())


def one(parts: list[Translation]) -> Translation:
    assert len(parts) == 1, parts
    return parts[0]


def test_unknown_verb_is_unmapped_under_a_bounded_label() -> None:
    t = one(ENGINE.verb_to_activities({"verb": "llm", "vendor": "x"}, CTX))
    assert (t.node, t.result, t.outputs) == ("unmapped", "unmapped", ())
    assert t.error is not None and "llm" in t.error


@pytest.mark.parametrize("verb", [None, "say", 5, ["say"]])
def test_non_object_verb_is_an_error_not_an_exception(verb: Any) -> None:
    t = one(ENGINE.verb_to_activities(verb, CTX))
    assert (t.node, t.result) == ("unmapped", "error")


def test_verb_without_name_is_unmapped() -> None:
    assert one(ENGINE.verb_to_activities({"text": "hi"}, CTX)).result == "unmapped"


def test_config_with_recognizer_and_record_gives_one_part_per_node() -> None:
    verb = {
        "verb": "config",
        "recognizer": {"vendor": "google", "language": "fr-FR"},
        "record": {"action": "stopCallRecording"},
    }
    parts = ENGINE.verb_to_activities(verb, CTX)
    by_node = {p.node: p for p in parts}
    assert set(by_node) == {"session_config", "call_recording"}
    assert all(p.result == "ok" for p in parts)
    assert by_node["session_config"].outputs == (
        {"type": "event", "name": "config", "sessionParams": {"language": "fr-FR"}},
    )
    assert by_node["call_recording"].outputs == ({"type": "event", "name": "stopCallRecording"},)


def test_config_with_nothing_mapped_is_unmapped() -> None:
    verb = {"verb": "config", "fillerNoise": {"enable": True, "url": "https://x/noise.wav"}}
    t = one(ENGINE.verb_to_activities(verb, CTX))
    assert (t.node, t.result) == ("unmapped", "unmapped")


def test_config_with_only_notify_events_is_ok_without_activity() -> None:
    t = one(ENGINE.verb_to_activities({"verb": "config", "notifyEvents": True}, CTX))
    assert (t.node, t.result, t.outputs) == ("call_events", "ok", ())


def test_sip_request_other_than_info_is_unmapped() -> None:
    verb = {"verb": "sip:request", "method": "NOTIFY", "body": "{}"}
    assert one(ENGINE.verb_to_activities(verb, CTX)).result == "unmapped"


def test_record_command_form() -> None:
    verb = {"verb": "config", "record": {"action": "resumeCallRecording", "recordingID": 7}}
    t = one(ENGINE.verb_to_activities(verb, CTX))
    assert t.outputs == (
        {
            "type": "event",
            "name": "resumeCallRecording",
            "activityParams": {"callRecordingId": "7"},
        },
    )


def test_transform_failure_is_a_clear_error() -> None:
    t = one(ENGINE.verb_to_activities({"verb": "dial", "target": [{"type": "phone"}]}, CTX))
    assert (t.node, t.result, t.outputs) == ("transfer_dial", "error", ())
    assert t.error == (
        "transfer_dial: activityParams.transferTarget: dial_target: phone target has no number"
    )


def test_missing_required_field_is_an_error() -> None:
    t = one(ENGINE.verb_to_activities({"verb": "dial"}, CTX))
    assert t.result == "error"
    assert t.error is not None and "activityParams.transferTarget" in t.error
    t = one(ENGINE.verb_to_activities({"verb": "dtmf"}, CTX))
    assert t.result == "error"


def test_error_in_nested_prompt_names_the_nested_verb() -> None:
    verb = {"verb": "gather", "timeout": 5, "say": {"text": "x", "synthesizer": "oops"}}
    ok = one(ENGINE.verb_to_activities(verb, CTX))
    assert ok.result == "ok"
    bad = {"verb": "gather", "timeout": "soon", "say": {"text": "x"}}
    t = one(ENGINE.verb_to_activities(bad, CTX))
    assert (t.node, t.result) == ("gather", "error")
    assert t.error is not None and "userNoInputTimeoutMS" in t.error


def test_gather_does_not_mutate_its_input_or_share_outputs() -> None:
    verb = {
        "verb": "gather",
        "timeout": 3,
        "say": {"text": "Hi", "synthesizer": {"vendor": "x", "language": "en-US"}},
    }
    before = copy.deepcopy(verb)
    first = one(ENGINE.verb_to_activities(verb, CTX)).outputs[0]
    assert verb == before
    first["activityParams"]["poison"] = True
    second = one(ENGINE.verb_to_activities(verb, CTX)).outputs[0]
    assert "poison" not in second["activityParams"]
    assert second["activityParams"] == {
        "language": "en-US",
        "userNoInputTimeoutMS": 3000,
        "sendDTMF": True,  # jambonz's default gather input is ["digits"]
    }


def test_defaults_are_fresh_each_time() -> None:
    activity = {"type": "event", "name": "start", "parameters": None}
    first = ENGINE.activity_to_voicegateway(activity, CTX).outputs[0]
    first["customerData"]["audiocodes"]["poison"] = True
    first["sip"]["headers"]["poison"] = "x"
    second = ENGINE.activity_to_voicegateway(activity, CTX).outputs[0]
    assert second["customerData"] == {"audiocodes": {}}
    assert second["sip"] == {"headers": {}}


def test_say_without_text_produces_nothing() -> None:
    t = one(ENGINE.verb_to_activities({"verb": "say"}, CTX))
    assert (t.result, t.outputs) == ("ok", ())


def test_tag_is_ok_with_no_output() -> None:
    t = one(ENGINE.verb_to_activities({"verb": "tag", "data": {"a": 1}}, CTX))
    assert (t.node, t.result, t.outputs) == ("tag", "ok", ())


def test_activity_results() -> None:
    t = ENGINE.activity_to_voicegateway({"type": "event", "name": "noUserInput"}, CTX)
    assert (t.node, t.result, t.message, t.hook_kind) == ("no_input", "ok", "input", "input")
    t = ENGINE.activity_to_voicegateway({"type": "event", "name": "speechHypothesis"}, CTX)
    assert (t.node, t.result, t.message) == ("unmapped", "unmapped", None)
    t = ENGINE.activity_to_voicegateway({"name": "start"}, CTX)
    assert t.result == "unmapped"
    t = ENGINE.activity_to_voicegateway("start", CTX)  # type: ignore[arg-type]
    assert t.result == "error"


def test_transfer_status_without_pending_transfer_is_unmapped() -> None:
    activity = {"type": "event", "name": "transferStatus", "value": {"status": "answered"}}
    assert ENGINE.activity_to_voicegateway(activity, CTX).result == "unmapped"
    t = ENGINE.activity_to_voicegateway(activity, {**CTX, "transfer_verb": "dial"})
    assert t.outputs == ({"dial_call_status": "completed", "dial_sip_status": 200},)


def test_transfer_status_with_bad_value_is_an_error() -> None:
    activity = {"type": "event", "name": "transferStatus", "value": "answered"}
    t = ENGINE.activity_to_voicegateway(activity, {**CTX, "transfer_verb": "sip:refer"})
    assert (t.node, t.result, t.message) == ("transfer_status", "error", "transfer")


def test_speech_confidence_as_string_and_missing_language() -> None:
    ctx = {**CTX, "language": None}
    activity = {"type": "message", "text": "yes", "parameters": {"confidence": "0.5"}}
    t = ENGINE.activity_to_voicegateway(activity, ctx)
    assert t.outputs == (
        {
            "reason": "speechDetected",
            "speech": {
                "is_final": True,
                "alternatives": [{"transcript": "yes", "confidence": 0.5}],
            },
        },
    )


def test_translation_is_frozen() -> None:
    t = Translation("say", "ok")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.node = "x"  # type: ignore[misc]


# --- template semantics, with a purpose-built mapping directory --------------------------------

FEATURES = """\
node: features
description: template features
direction: to_audiocodes
match:
  verb: probe
  when:
    $not: {skip: truthy}
let:
  shared:
    fixed: 1
output:
  - when: {mode: {not_in: [off, none]}}
    foreach: items[*].name
    require: [name]
    emit:
      name: $item
      index: $index
      literal: "$$not a path"
      first_tag: $tags[0]
      last_tag: $tags[-1]
      mapped:
        $from: mode
        $map: {fast: 1, slow: 2}
        $default: 0
      coalesced: {$from: [a.b, c, ctx.route]}
      args: {$args: [a.b, c]}
      flag:
        $when:
          $all:
            - mode: {equals: fast}
            - tags: {contains: x}
        $value: true
      nested: {deep: {deeper: $missing}}
      from_let: $let.shared
"""

ACTIVITY = """\
node: {node}
description: d
direction: to_voicegateway
match:
  type: event
  name: ping
  when: {{{cond}}}
message: input
output:
  - when: {{never: present}}
    emit: {{reason: timeout}}
"""


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    directory: Path = tmp_path_factory.mktemp("features")
    (directory / "features.yaml").write_text(FEATURES, encoding="utf-8")
    (directory / "a.yaml").write_text(ACTIVITY.format(node="a", cond="x: present"))
    (directory / "b.yaml").write_text(ACTIVITY.format(node="b", cond="y: present"))
    return Engine(load_mappings(directory))


def test_template_features(features: Engine) -> None:
    verb = {
        "verb": "probe",
        "mode": "fast",
        "items": [{"name": "one"}, {"other": 1}, {"name": "two"}],
        "tags": ["x", "y", "z"],
        "c": "see",
    }
    t = one(features.verb_to_activities(verb, CTX))
    assert t.result == "ok", t.error
    common = {
        "literal": "$not a path",
        "first_tag": "x",
        "last_tag": "z",
        "mapped": 1,
        "coalesced": "see",
        "args": [None, "see"],
        "flag": True,
        "from_let": {"fixed": 1},
    }
    assert t.outputs == (
        {"name": "one", "index": 0, **common},
        {"name": "two", "index": 1, **common},
    )


def test_template_defaults_and_omissions(features: Engine) -> None:
    verb = {"verb": "probe", "mode": "slower", "items": [{"name": "solo"}]}
    t = one(features.verb_to_activities(verb, CTX))
    assert t.outputs == (
        {
            "name": "solo",
            "index": 0,
            "literal": "$not a path",
            "mapped": 0,
            "coalesced": "r",
            "args": [None, None],
            "from_let": {"fixed": 1},
        },
    )


def test_output_and_match_conditions(features: Engine) -> None:
    off = one(features.verb_to_activities({"verb": "probe", "mode": "off", "items": []}, CTX))
    assert (off.result, off.outputs) == ("ok", ())
    skipped = one(features.verb_to_activities({"verb": "probe", "skip": 1}, CTX))
    assert (skipped.node, skipped.result) == ("unmapped", "unmapped")


def test_runtime_ambiguity_and_empty_output_are_errors(features: Engine) -> None:
    both = features.activity_to_voicegateway({"type": "event", "name": "ping", "x": 1, "y": 1}, CTX)
    assert both.result == "error"
    assert both.error is not None and "a, b" in both.error
    empty = features.activity_to_voicegateway({"type": "event", "name": "ping", "x": 1}, CTX)
    assert (empty.node, empty.result, empty.message) == ("a", "error", "input")


# --- robustness: random input never raises and never yields null -------------------------------

_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_json = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
_VERBS = ["say", "play", "gather", "dial", "sip:refer", "config", "hangup", "dtmf", "tag",
          "sip:request", "pause", "sip:decline", "answer", "redirect"]  # fmt: skip
_KEYS = ["text", "url", "target", "headers", "synthesizer", "recognizer", "bargeIn", "record",
         "say", "play", "timeout", "input", "numDigits", "dtmf", "method", "body",
         "referTo", "length", "status", "reason"]  # fmt: skip


def _no_nulls(value: Any) -> bool:
    """No null in the fields templates build (passed-through JSON, e.g. metadata, may hold null)."""
    if not isinstance(value, dict):
        return value is not None
    built = ("activityParams", "sessionParams", "speech", "sip", "customerData")
    return all(v is not None and (k not in built or _no_nulls(v)) for k, v in value.items())


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(_VERBS),
    body=st.dictionaries(st.sampled_from(_KEYS), _json, max_size=5),
)
def test_random_verbs_never_raise(name: str, body: dict[str, Any]) -> None:
    for part in ENGINE.verb_to_activities({**body, "verb": name}, CTX):
        assert part.result in ("ok", "unmapped", "error")
        assert all(_no_nulls(o) for o in part.outputs)


_ACTIVITY_NAMES = ["start", "DTMF", "dtmf", "noUserInput", "transferStatus", "playUrlFailed",
                   "conversationEnd", "other"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["event", "message", "bogus"]),
    name=st.sampled_from(_ACTIVITY_NAMES),
    fields=st.dictionaries(st.sampled_from(["text", "value", "parameters"]), _json, max_size=3),
    transfer_verb=st.sampled_from([None, "dial", "sip:refer"]),
)
def test_random_activities_never_raise(
    kind: str, name: str, fields: dict[str, Any], transfer_verb: str | None
) -> None:
    activity = {**fields, "type": kind, "name": name}
    t = ENGINE.activity_to_voicegateway(activity, {**CTX, "transfer_verb": transfer_verb})
    assert t.result in ("ok", "unmapped", "error")
    assert len(t.outputs) == (1 if t.result == "ok" else 0)
    assert all(_no_nulls(o) for o in t.outputs)
