"""Sync-turn cutting: turn-ending verbs, settle, timeout, busy, and nothing lost."""

from __future__ import annotations

import pytest

from bridge.turns import TurnCollector, TurnEnd


def act(text: str) -> dict[str, object]:
    return {"type": "message", "text": text}


def collector() -> TurnCollector:
    return TurnCollector(settle_s=0.3, timeout_s=4.0)


def test_turn_ending_verb_completes_at_once() -> None:
    turns = collector()
    turns.begin_turn(1, 0.0)
    turns.add_outputs([act("a")], 0.1)
    assert turns.poll(0.1) is None
    turns.add_outputs([act("b")], 0.2, turn_ending=True)
    response = turns.poll(0.2)
    assert response is not None
    assert response.turn == 1
    assert [o["text"] for o in response.outputs] == ["a", "b"]
    assert response.ended_by is TurnEnd.TURN_ENDING_VERB


def test_settles_after_idle_time_since_last_output() -> None:
    turns = collector()
    turns.begin_turn(1, 0.0)
    turns.add_outputs([act("a")], 0.1)
    assert turns.deadline() == pytest.approx(0.4)
    assert turns.poll(0.39) is None
    response = turns.poll(0.4)
    assert response is not None and response.ended_by is TurnEnd.SETTLED


def test_busy_side_does_not_settle_until_timeout() -> None:
    turns = collector()
    turns.begin_turn(1, 0.0)
    turns.set_busy(True, 0.0)
    assert turns.deadline() == pytest.approx(4.0)
    assert turns.poll(3.9) is None
    response = turns.poll(4.0)
    assert response is not None
    assert response.ended_by is TurnEnd.TIMEOUT
    assert response.outputs == ()


def test_becoming_idle_restarts_settle_clock() -> None:
    turns = collector()
    turns.begin_turn(1, 0.0)
    turns.set_busy(True, 0.0)
    turns.set_busy(False, 1.0)
    assert turns.poll(1.2) is None
    assert turns.poll(1.3) is not None


def test_late_outputs_wait_for_next_response() -> None:
    turns = collector()
    turns.begin_turn(1, 0.0)
    turns.add_outputs([act("a")], 0.0, turn_ending=True)
    assert turns.poll(0.0) is not None
    turns.add_outputs([act("late")], 1.0)
    assert turns.poll(1.0) is None
    turns.begin_turn(2, 2.0)
    turns.add_outputs([act("b")], 2.1, turn_ending=True)
    response = turns.poll(2.1)
    assert response is not None
    assert [o["text"] for o in response.outputs] == ["late", "b"]


def test_take_queued_only_without_pending_response() -> None:
    turns = collector()
    turns.add_outputs([act("x")], 0.0)
    turns.begin_turn(1, 0.0)
    assert turns.take_queued() == []
    response = turns.poll(0.3)
    assert response is not None and len(response.outputs) == 1
    turns.add_outputs([act("y")], 1.0)
    assert turns.take_queued() == [act("y")]
    assert turns.take_queued() == []


def test_call_end_completes_pending_and_later_responses() -> None:
    turns = collector()
    turns.begin_turn(1, 0.0)
    turns.set_busy(True, 0.0)
    turns.call_ended()
    response = turns.poll(0.0)
    assert response is not None and response.ended_by is TurnEnd.CALL_ENDED
    turns.begin_turn(2, 1.0)
    response = turns.poll(1.0)
    assert response is not None and response.ended_by is TurnEnd.CALL_ENDED


def test_one_pending_response_at_a_time() -> None:
    turns = collector()
    turns.begin_turn(1, 0.0)
    with pytest.raises(RuntimeError):
        turns.begin_turn(2, 0.0)


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        TurnCollector(settle_s=-1, timeout_s=1)
