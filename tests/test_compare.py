"""compare: node reverse index, lifting, noise and normalisers, alignment, metrics."""

from __future__ import annotations

import copy
import gc
import json
import weakref
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.compare import (
    ActivityComparison,
    ComparisonResult,
    DiffKind,
    TurnComparison,
    compare_turn,
    field_label,
    lift,
    record_metrics,
)
from bridge.mapping import Direction, load_mappings
from bridge.metrics import Metrics

MAPPINGS = load_mappings()
GOLDEN = Path(__file__).parent / "golden"

MATCH = ComparisonResult.MATCH
MISMATCH = ComparisonResult.MISMATCH
MISSING = ComparisonResult.MISSING
EXTRA = ComparisonResult.EXTRA


def say(text: str, **extra: Any) -> dict[str, Any]:
    return {"id": "a", "timestamp": "t", "type": "message", "text": text, **extra}


def event(name: str, **fields: Any) -> dict[str, Any]:
    return {"id": "b", "timestamp": "t", "type": "event", "name": name, **fields}


def play(url: str, **params: Any) -> dict[str, Any]:
    return event("playUrl", activityParams={"playUrlUrl": url, **params})


def transfer(target: str, **params: Any) -> dict[str, Any]:
    return event("transfer", activityParams={"transferTarget": target, **params})


HANGUP = event("hangup", activityParams={"hangupReason": "done"})


def compare(primary: list[Any], shadow: list[Any]) -> TurnComparison:
    return compare_turn(primary, shadow, MAPPINGS, primary_path="legacy")


def summary(c: TurnComparison) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(i.node, str(i.result), i.fields) for i in c.items]


# --- node reverse index ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("activity", "node"),
    [
        (say("hi"), "say"),
        (play("https://x/a.wav"), "play"),
        (HANGUP, "hangup"),
        (transfer("tel:+4930123456"), "transfer_dial"),
        (transfer("sip:q@pbx", transferReferredByURL="sip:bot@b"), "transfer_refer"),
        (event("config", sessionParams={"language": "de-DE"}), "session_config"),
        (event("startCallRecording"), "call_recording"),
        (event("resumeCallRecording"), "call_recording"),
        (event("sendMetaData", value={"a": 1}), "send_metadata"),
        (event("sendDtmf", activityParams={"dtmfDigits": "12"}), "dtmf"),
        (event("PlayURL"), "play"),  # case-insensitive fallback
        (event("somethingNew"), "unmapped"),
        ({"type": "typing"}, "unmapped"),
        ({"type": "event"}, "unmapped"),
        ({}, "unmapped"),
    ],
)
def test_node_for_activity(activity: dict[str, Any], node: str) -> None:
    assert MAPPINGS.node_for_activity(activity) == node


def test_reverse_index_reaches_every_to_audiocodes_node_that_emits() -> None:
    # gather emits its nested verbs' activities (say, play) or a config event (session_config);
    # tag and call_events emit nothing.
    reachable = {node for shape in MAPPINGS.by_emitted.values() for node, _own, _identify in shape}
    emitting = {
        m.node
        for m in MAPPINGS
        if m.direction is Direction.TO_AUDIOCODES and m.outputs and not m.nested_verbs
    }
    assert emitting == reachable
    assert emitting >= {"say", "play", "hangup", "transfer_dial", "transfer_refer", "dtmf"}


def golden_outputs() -> list[tuple[str, str, dict[str, Any]]]:
    cases = []
    for m in MAPPINGS:
        if m.direction is not Direction.TO_AUDIOCODES:
            continue
        for path in sorted((GOLDEN / m.node).glob("*.json")):
            case = json.loads(path.read_text(encoding="utf-8"))
            for output in case.get("expected", []):
                cases.append((m.node, path.stem, output))
    return cases


@pytest.mark.parametrize(("node", "case", "activity"), golden_outputs())
def test_golden_outputs_map_back_to_their_node(
    node: str, case: str, activity: dict[str, Any]
) -> None:
    found = MAPPINGS.node_for_activity(activity)
    if node == "gather":
        assert found in {"say", "play", "session_config"}
    elif node == "transfer_refer" and "transferReferredByURL" not in activity["activityParams"]:
        assert found == "transfer_dial"  # indistinguishable without a referredBy; same hints
    elif node == "sip_decline":
        assert found == "hangup"  # on the AudioCodes side a declined call is a hangup
    else:
        assert found == node, case


# --- lifting --------------------------------------------------------------------------------


def test_lift_flattens_with_dots_and_indices() -> None:
    value = {"a": {"b": [1, {"c": 2}], "e": {}, "f": []}, "g": None}
    assert lift(value) == {"a.b[0]": 1, "a.b[1].c": 2, "a.e": {}, "a.f": [], "g": None}


def test_lift_of_a_scalar_and_deep_nesting() -> None:
    assert lift(5) == {"$": 5}
    deep: Any = "leaf"
    for _ in range(5000):
        deep = {"k": deep}
    (path,) = lift(deep)
    assert path.count("k") == 5000


def test_field_label_is_bounded() -> None:
    assert field_label("activityParams.transferSipHeaders[3].value") == (
        "activityParams.transferSipHeaders[*].value"
    )
    assert field_label("value.a.b.c.d.e") == "value.a.b.c.*"
    assert "4921154591991" not in field_label("value.+4921154591991")


# --- turn comparison ------------------------------------------------------------------------


def test_identical_turn_all_match() -> None:
    turn = [say("Hello"), play("https://x/a.wav"), transfer("tel:+4930123456"), HANGUP]
    c = compare(turn, copy.deepcopy(turn))
    assert [i.result for i in c.items] == [MATCH] * 4
    assert c.order_matches and not c.diverged
    assert [i.node for i in c.items] == ["say", "play", "transfer_dial", "hangup"]


def test_id_and_timestamp_are_ignored() -> None:
    a = say("Hello")
    b = {**say("Hello"), "id": "other", "timestamp": "2030-01-01T00:00:00.000Z"}
    assert summary(compare([a], [b])) == [("say", "match", ())]


def test_changed_prompt_text_is_a_say_mismatch_on_text() -> None:
    c = compare([say("Hello"), HANGUP], [say("Goodbye"), HANGUP])
    assert summary(c) == [("say", "mismatch", ("text",)), ("hangup", "match", ())]
    assert c.items[0].diffs[0].kind is DiffKind.VALUE
    assert c.items[0].primary is not None and c.items[0].primary["text"] == "Hello"
    assert c.items[0].shadow is not None and c.items[0].shadow["text"] == "Goodbye"
    assert c.diverged and c.order_matches


def test_changed_play_url() -> None:
    c = compare([play("https://x/a.wav")], [play("https://x/b.wav")])
    assert summary(c) == [("play", "mismatch", ("activityParams.playUrlUrl",))]


def test_changed_transfer_target() -> None:
    c = compare([transfer("tel:+4930123456")], [transfer("tel:+4930999999")])
    assert summary(c) == [("transfer_dial", "mismatch", ("activityParams.transferTarget",))]


def test_refer_against_dial_is_one_field_mismatch_not_missing_plus_extra() -> None:
    refer = transfer("sip:q@pbx", transferReferredByURL="sip:bot@b")
    c = compare([refer], [transfer("sip:q@pbx")])
    assert summary(c) == [("transfer_refer", "mismatch", ("activityParams.transferReferredByURL",))]
    assert c.items[0].diffs[0].kind is DiffKind.MISSING


def test_noise_fields_do_not_count() -> None:
    a = play("https://x/a.wav", playUrlMediaFormat="wav/lpcm16", playUrlCaching=True)
    b = play("https://x/a.wav", playUrlMediaFormat="raw/lpcm16")
    assert summary(compare([a], [b])) == [("play", "match", ())]


def test_noise_is_per_node() -> None:
    # playUrlMediaFormat is noise for play, not for say.
    a = say("Hi", activityParams={"playUrlMediaFormat": "x"})
    b = say("Hi", activityParams={"playUrlMediaFormat": "y"})
    assert summary(compare([a], [b])) == [
        ("say", "mismatch", ("activityParams.playUrlMediaFormat",))
    ]


def test_ssml_wrapper_and_whitespace_are_normalised_for_say() -> None:
    ssml = '<speak><voice name="en-US-JennyNeural">Hello   there,\n caller</voice></speak>'
    assert summary(compare([say("Hello there, caller")], [say(ssml)])) == [("say", "match", ())]


def test_ssml_is_not_normalised_where_the_mapping_does_not_say_so() -> None:
    a = event("sendMetaData", value="<speak>x</speak>")
    b = event("sendMetaData", value="x")
    assert summary(compare([a], [b])) == [("send_metadata", "mismatch", ("value",))]


def test_send_metadata_json_text_equals_its_object() -> None:
    a = event("sendMetaData", value={"k": [1, "a"]})
    b = event("sendMetaData", value='{"k": [1, "a"]}')
    c = event("sendMetaData", value='{"k": [2, "a"]}')
    assert summary(compare([a], [b])) == [("send_metadata", "match", ())]
    assert summary(compare([a], [c])) == [("send_metadata", "mismatch", ("value.k[0]",))]


def test_transfer_event_name_case_is_normalised() -> None:
    a = transfer("tel:+4930123456")
    b = {**transfer("tel:+4930123456"), "name": "Transfer"}
    assert summary(compare([a], [b])) == [("transfer_dial", "match", ())]


def test_extra_activity_in_the_middle() -> None:
    primary = [say("One"), play("https://x/a.wav"), say("Two"), HANGUP]
    shadow = [say("One"), play("https://x/a.wav"), say("Surprise"), say("Two"), HANGUP]
    c = compare(primary, shadow)
    assert summary(c) == [
        ("say", "match", ()),
        ("play", "match", ()),
        ("say", "extra", ()),
        ("say", "match", ()),
        ("hangup", "match", ()),
    ]
    extra = c.items[2]
    assert extra.primary is None and extra.shadow is not None
    assert extra.shadow["text"] == "Surprise"
    assert c.order_matches


def test_missing_at_the_end() -> None:
    c = compare([say("One"), HANGUP], [say("One")])
    assert summary(c) == [("say", "match", ()), ("hangup", "missing", ())]
    assert c.items[1].shadow is None and c.items[1].primary == HANGUP
    assert c.order_matches and c.diverged
    assert c.count(MISSING) == 1


def test_reordered_activities() -> None:
    c = compare([say("One"), play("https://x/a.wav")], [play("https://x/a.wav"), say("One")])
    assert not c.order_matches
    assert sorted(str(i.result) for i in c.items) == ["extra", "match", "missing"]


def test_alignment_prefers_exact_matches_among_same_node() -> None:
    c = compare([say("A"), say("B")], [say("B")])
    assert summary(c) == [("say", "missing", ()), ("say", "match", ())]


def test_field_diff_kinds() -> None:
    a = event("sendMetaData", value={"n": 1, "s": "x", "gone": 1, "flag": True})
    b = event("sendMetaData", value={"n": 1.0, "s": 5, "new": 1, "flag": 1})
    (item,) = compare([a], [b]).items
    kinds = {d.path: d.kind for d in item.diffs}
    assert kinds == {
        "value.s": DiffKind.TYPE,
        "value.gone": DiffKind.MISSING,
        "value.flag": DiffKind.TYPE,
        "value.new": DiffKind.EXTRA,
    }


def test_unmapped_activities_are_compared_too() -> None:
    a = event("somethingNew", value="x")
    c = compare([a], [event("somethingNew", value="y")])
    assert summary(c) == [("unmapped", "mismatch", ("value",))]


def test_empty_turns_and_latencies() -> None:
    c = compare_turn(
        [], [], MAPPINGS, primary_path="voicegateway", primary_latency_s=0.1, shadow_latency_s=0.2
    )
    assert c.items == () and c.order_matches and not c.diverged
    assert (c.primary_path, c.primary_latency_s, c.shadow_latency_s) == ("voicegateway", 0.1, 0.2)


def test_malformed_activities_do_not_raise() -> None:
    c = compare([None, 3, {"type": 5}], [None, "x", {"name": []}])
    assert all(isinstance(i, ActivityComparison) for i in c.items)
    assert {i.node for i in c.items} == {"unmapped"}


def test_long_turns_fall_back_to_positional_alignment() -> None:
    turn = [say(str(i)) for i in range(300)]
    c = compare(turn, list(reversed(turn)))
    assert len(c.items) == 300
    assert any(i.result is MISMATCH for i in c.items)


def test_custom_hints_with_wildcards(tmp_path: Path) -> None:
    (tmp_path / "n.yaml").write_text(
        """\
node: note
description: test node
direction: to_audiocodes
match: {verb: note}
output:
  - emit:
      type: event
      name: note
      items: $items
      value: $body
compare:
  noise: ["items[*].seq"]
  normalize:
    "items[*].name": [lower]
    value: [json_or_text]
""",
        encoding="utf-8",
    )
    mappings = load_mappings(tmp_path)
    a = event("note", items=[{"seq": 1, "name": "A"}, {"seq": 2, "name": "b"}], value={"k": 1})
    b = event("note", items=[{"seq": 9, "name": "a"}, {"seq": 8, "name": "B"}], value='{"k": 1}')
    c = compare_turn([a], [b], mappings, primary_path="legacy")
    assert [(i.node, i.result) for i in c.items] == [("note", MATCH)]


# --- metrics --------------------------------------------------------------------------------


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_record_metrics() -> None:
    headers = [{"name": "X-A", "value": "1"}, {"name": "X-B", "value": "2"}]
    headers2 = [{"name": "X-A", "value": "3"}, {"name": "X-B", "value": "4"}]
    primary = [say("Hi"), transfer("tel:+4930123456", transferSipHeaders=headers)]
    shadow = [say("Hi"), say("extra"), transfer("tel:+4930123456", transferSipHeaders=headers2)]
    metrics = Metrics()
    record_metrics(compare(primary, shadow), metrics, "support")
    total = "acvg_shadow_comparisons_total"
    assert sample(metrics, total, route="support", node="say", result="match") == 1
    assert sample(metrics, total, route="support", node="say", result="extra") == 1
    assert sample(metrics, total, route="support", node="transfer_dial", result="mismatch") == 1
    field = "activityParams.transferSipHeaders[*].value"
    fields = "acvg_shadow_field_mismatches_total"
    assert sample(metrics, fields, route="support", node="transfer_dial", field=field) == 1
    exposition = metrics.exposition().decode()
    assert "4930123456" not in exposition and "[0]" not in exposition


# --- properties -----------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)
NAMES = st.sampled_from(["playUrl", "hangup", "transfer", "config", "sendMetaData", "x", "DTMF"])
ACTIVITY = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "event", "other"])},
    optional={
        "name": NAMES,
        "text": st.text(max_size=20),
        "activityParams": st.dictionaries(st.text(max_size=12), JSON, max_size=3),
        "value": JSON,
        "id": st.text(max_size=4),
    },
)
ANYTHING = st.lists(ACTIVITY | st.dictionaries(st.text(max_size=5), JSON) | JSON, max_size=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(ACTIVITY, max_size=6))
def test_a_turn_compared_with_itself_matches(turn: list[dict[str, Any]]) -> None:
    c = compare(turn, copy.deepcopy(turn))
    assert all(i.result is MATCH for i in c.items), summary(c)
    assert len(c.items) == len(turn) and c.order_matches


@settings(max_examples=150, deadline=None)
@given(ANYTHING, ANYTHING)
def test_never_raises_and_accounts_for_every_activity(
    primary: list[Any], shadow: list[Any]
) -> None:
    c = compare(primary, shadow)
    assert sum(1 for i in c.items if i.primary is not None) == len(primary)
    assert sum(1 for i in c.items if i.shadow is not None) == len(shadow)
    metrics = Metrics()
    record_metrics(c, metrics, "r")


def test_bounded_field_labels_stay_in_a_closed_set() -> None:
    from bridge.compare import bounded_field

    known = frozenset({"text", "activityParams.transferSipHeaders", "value"})
    assert bounded_field("text", known) == "text"
    assert bounded_field("activityParams.transferSipHeaders[3].value", known) == (
        "activityParams.transferSipHeaders.*"
    )
    assert bounded_field("value.customer-7f3a9c", known) == "value.*"
    assert bounded_field("sessionParams.anything", known) == "sessionParams.*"
    assert bounded_field("weird.key", known) == "other"
    assert bounded_field("name", known) == "name"


def test_hint_plans_are_remembered_per_mapping_set_and_bounded() -> None:
    from bridge import compare as module

    mappings = load_mappings()
    turn = [say("hi"), play("https://x/a.wav")]
    same = compare_turn(turn, turn, mappings, primary_path="x")
    assert all(i.result is MATCH for i in same.items)
    assert mappings not in module._HINTS  # equal activities: decided without the hints
    spaced = compare_turn(turn, [say("  hi "), turn[1]], mappings, primary_path="x")
    assert all(i.result is MATCH for i in spaced.items)
    hints = module._HINTS[mappings]["say"]
    assert hints.plan("id") is None  # noise
    assert hints.plan("text")  # the say normalisers
    for k in range(module._MAX_PLANNED_PATHS + 10):
        hints.plan(f"value.k{k}")
    assert len(hints._plans) == module._MAX_PLANNED_PATHS
    assert hints.plan("value.unplanned") == ()  # still answered, just not kept
    kept = weakref.ref(mappings)
    del mappings, hints
    gc.collect()
    assert kept() is None  # the memo does not keep a replaced mapping set alive


@pytest.mark.parametrize(
    ("primary", "shadow"),
    [
        ({"type": "event", "name": "x", "value": True}, {"type": "event", "name": "x", "value": 1}),
        ({"type": "event", "name": "x", "value": 1}, {"type": "event", "name": "x", "value": 1.5}),
        ({"type": "message", "text": "a", "value": [1]}, {"type": "message", "text": "a"}),
        ({"type": "message", "text": "a"}, {"type": "message", "text": "a", "x": None}),
    ],
)
def test_the_equality_shortcut_never_hides_a_difference(
    primary: dict[str, Any], shadow: dict[str, Any]
) -> None:
    assert compare([primary], [shadow]).items[0].result is MISMATCH


# Each shortcut switched off in turn must give the answer the full comparison gives: the usual
# turn (same kinds, all equal) skips the alignment table, and equal activities skip the lifting.
SHORTCUTS = {
    "in_step": ("bridge.compare._Turn._in_step", lambda self: False),
    "equality": ("bridge.compare._same_activity", lambda a, b: False),
}


@pytest.mark.parametrize("shortcut", sorted(SHORTCUTS))
@settings(max_examples=200, deadline=None)
@given(st.lists(ACTIVITY, max_size=5), st.lists(ACTIVITY, max_size=5), st.booleans())
def test_a_shortcut_gives_what_the_full_comparison_gives(
    shortcut: str, primary: list[dict[str, Any]], shadow: list[dict[str, Any]], same: bool
) -> None:
    if same:
        shadow = copy.deepcopy(primary)
    fast = compare(primary, shadow)
    target, off = SHORTCUTS[shortcut]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(target, off)
        full = compare(primary, shadow)
    assert summary(fast) == summary(full)
    assert fast.order_matches == full.order_matches
