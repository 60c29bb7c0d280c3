"""The soak ledger (bench/ledger.py): a clean record holds, and every kind of loss, duplicate,
reordering, missing answer, unended call or leaked session is caught."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bench.ledger import (
    FLOW_HANGUP_REASON,
    BridgeState,
    EndKind,
    FaultKind,
    FaultWindow,
    Ledger,
    percentile,
    tag_of,
)

_ids = itertools.count()
CLEAN = BridgeState({("r", "legacy", "primary"): 0.0}, 0, 0)


def out(text: str) -> dict[str, Any]:
    return {"type": "message", "text": text, "id": f"id-{next(_ids)}"}


def hangup(reason: str) -> dict[str, Any]:
    return {
        "type": "event",
        "name": "hangup",
        "activityParams": {"hangupReason": reason},
        "id": f"id-{next(_ids)}",
    }


def answers(k: int) -> list[dict[str, Any]]:
    return [out(f"t{k} p1"), out(f"t{k} p2")]


def sync_call(ledger: Ledger, call: str = "c", *, turns: int = 3, path: str = "legacy") -> None:
    """A clean sync call: start plus `turns` turns, each answered with both outputs, then the
    caller hangs up."""
    ledger.call_created(call, "r", "sync", path, 200, 0.0)
    for k in range(turns + 1):
        ledger.turn_sent(call, k, 10.0 * k + 1)
        ledger.turn_answered(call, k, 200, answers(k), 10.0 * k + 2)
    ledger.call_ended(call, EndKind.CALLER, 200, 10.0 * turns + 5)


def verdict(ledger: Ledger, state: BridgeState = CLEAN) -> Any:
    ledger.bridge_final(state)
    return ledger.verdict()


def test_a_clean_record_holds_and_counts_everything() -> None:
    ledger = Ledger()
    sync_call(ledger, "a")
    ledger.call_created("b", "r", "async", "voicegateway", 200, 0.0)
    ledger.turn_sent("b", 0, 1.0)
    ledger.turn_answered("b", 0, 200, [], 1.1)
    ledger.outputs("b", answers(0), 1.5)
    ledger.turn_sent("b", 1, 2.0, bye=True)
    ledger.turn_answered("b", 1, 200, [], 2.1)
    ledger.outputs("b", [out("t1 bye p1"), hangup(FLOW_HANGUP_REASON)], 2.5)
    ledger.call_ended("b", EndKind.FLOW, 200, 3.0)
    result = verdict(ledger)
    assert result.ok, result.problems
    f = result.figures
    assert (f["calls"], f["turns"], f["turns_complete"], f["outputs_checked"]) == (2, 6, 6, 11)
    assert f["ended"] == {"caller": 1, "flow": 1, "bridge": 0}
    assert f["duplicates"] == f["lost"] == f["leaked"] == 0
    assert ledger.latencies(route="r", path="voicegateway") == [0.5, 0.5]


def test_a_duplicate_output_is_caught_by_id_and_by_number() -> None:
    ledger = Ledger()
    sync_call(ledger)
    again = dict(ledger.calls["c"].outputs[2][1])
    ledger.outputs("c", [again], 99.0)
    result = verdict(ledger)
    assert result.figures["duplicates"] == 2
    assert any("delivered twice" in p for p in result.problems)


def test_reordered_outputs_are_caught() -> None:
    ledger = Ledger()
    ledger.call_created("c", "r", "sync", "legacy", 200, 0.0)
    ledger.turn_sent("c", 0, 1.0)
    ledger.turn_answered("c", 0, 200, [out("t0 p2"), out("t0 p1")], 2.0)
    ledger.call_ended("c", EndKind.CALLER, 200, 3.0)
    result = verdict(ledger)
    assert result.figures["reordered"] == 1
    assert not result.ok


def test_outputs_of_a_turn_answered_late_are_not_lost() -> None:
    ledger = Ledger()
    ledger.call_created("c", "r", "sync", "voicegateway", 200, 0.0)
    ledger.turn_sent("c", 0, 1.0)
    ledger.turn_answered("c", 0, 200, [out("t0 p1")], 2.0)  # turn timeout: p2 comes later
    ledger.turn_sent("c", 1, 3.0)
    ledger.turn_answered("c", 1, 200, [out("t0 p2"), *answers(1)], 4.0)
    ledger.call_ended("c", EndKind.CALLER, 200, 5.0)
    result = verdict(ledger)
    assert result.ok, result.problems


def test_a_lost_turn_fails_unless_a_fault_on_its_path_explains_it() -> None:
    def record(path: str, fault: FaultWindow | None) -> Any:
        ledger = Ledger()
        ledger.call_created("c", "r", "sync", path, 200, 0.0)
        ledger.turn_sent("c", 0, 1.0)
        ledger.turn_answered("c", 0, 200, answers(0), 1.5)
        ledger.turn_sent("c", 1, 2.0)
        ledger.turn_answered("c", 1, 200, [], 6.0)  # cut: the upstream never answered it
        ledger.turn_sent("c", 2, 7.0)
        ledger.turn_answered("c", 2, 200, answers(2), 7.5)
        ledger.call_ended("c", EndKind.CALLER, 200, 8.0)
        if fault is not None:
            ledger.fault(fault)
        return verdict(ledger)

    assert record("voicegateway", None).figures["lost"] == 1
    killed = FaultWindow(FaultKind.VG_KILLED, 3.0, 4.0, frozenset({"voicegateway"}))
    ok = record("voicegateway", killed)
    assert ok.ok and ok.figures["turns_cut_by_fault"] == 1
    assert record("legacy", killed).figures["lost"] == 1
    later = FaultWindow(FaultKind.VG_KILLED, 20.0, 21.0, frozenset({"voicegateway"}), grace=5.0)
    assert record("voicegateway", later).figures["lost"] == 1


def test_a_bridge_hangup_ends_the_call_cleanly_but_excuses_only_its_own_turn() -> None:
    ledger = Ledger()
    ledger.call_created("c", "r", "sync", "legacy", 200, 0.0)
    ledger.turn_sent("c", 0, 1.0)
    ledger.turn_answered("c", 0, 200, [], 1.5)  # lost, long before the hangup
    ledger.turn_sent("c", 1, 2.0)
    ledger.turn_answered("c", 1, 200, [hangup("legacy unavailable")], 3.0)
    ledger.call_ended("c", EndKind.BRIDGE, 200, 3.5)
    result = verdict(ledger)
    assert result.figures["bridge_hangups"] == 1
    assert result.figures["turns_cut_by_fault"] == 1
    assert result.figures["lost"] == 1
    assert [p for p in result.problems if "turn 0 lost" in p]


def test_outputs_after_a_hangup_are_caught() -> None:
    ledger = Ledger()
    ledger.call_created("c", "r", "async", "legacy", 200, 0.0)
    ledger.turn_sent("c", 0, 1.0)
    ledger.turn_answered("c", 0, 200, [hangup("voicegateway unavailable")], 1.5)
    ledger.outputs("c", answers(0), 1.6)
    ledger.call_ended("c", EndKind.BRIDGE, 200, 2.0)
    assert any("after the hangup" in p for p in verdict(ledger).problems)


@pytest.mark.parametrize(
    ("status", "failures", "expect"),
    [(500, [], "HTTP 500"), (None, ["TimeoutError"], "answered 0 times")],
)
def test_unanswered_or_5xx_turns_fail(status: int | None, failures: list[str], expect: str) -> None:
    ledger = Ledger()
    ledger.call_created("c", "r", "sync", "legacy", 200, 0.0)
    ledger.turn_sent("c", 0, 1.0)
    if status is not None:
        ledger.turn_answered("c", 0, status, [], 2.0)
    for failure in failures:
        ledger.turn_failed("c", 0, failure)
    ledger.call_ended("c", EndKind.CALLER, 200, 3.0)
    result = verdict(ledger)
    assert any(expect in p for p in result.problems), result.problems
    assert result.figures["server_errors"] == (1 if status == 500 else 0)


def test_a_call_that_never_ended_fails() -> None:
    ledger = Ledger()
    sync_call(ledger)
    ledger.calls["c"].end = None
    assert any("never ended" in p for p in verdict(ledger).problems)


def test_a_flow_end_needs_the_flows_hangup() -> None:
    ledger = Ledger()
    ledger.call_created("c", "r", "sync", "legacy", 200, 0.0)
    ledger.turn_sent("c", 0, 1.0, bye=True)
    ledger.turn_answered("c", 0, 200, [out("t0 p1")], 2.0)
    ledger.call_ended("c", EndKind.FLOW, 200, 3.0)
    assert any("without its hangup" in p for p in verdict(ledger).problems)


def test_leaked_sessions_and_bridge_errors_fail() -> None:
    ledger = Ledger()
    sync_call(ledger)
    state = BridgeState({("r", "voicegateway", "shadow"): 2.0}, 1, 3)
    result = verdict(ledger, state)
    assert result.figures["leaked"] == 3
    assert len(result.problems) == 3
    assert not Ledger().verdict().ok  # no final state recorded


def test_tags_percentile_and_peak_concurrency() -> None:
    assert tag_of({"type": "message", "text": "t12 bye p1"}) == (12, 1)
    assert tag_of({"type": "message", "text": "t1 p2 extra"}) is None
    assert tag_of({"type": "event", "text": "t1 p2"}) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(x) for x in range(1, 101)], 99) == 99.0
    ledger = Ledger()
    for i, (start, end) in enumerate([(0.0, 5.0), (1.0, 2.0), (1.5, 6.0), (5.5, 7.0)]):
        ledger.call_created(str(i), "r", "sync", "legacy", 200, start)
        ledger.call_ended(str(i), EndKind.CALLER, 200, end)
    assert ledger.peak_concurrency() == 3
