"""Outbox (design §3.4): unit tests per rule, and properties over random operation sequences."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.delivery import BatchEnd, Channel, Delivery, Outbox, Output

SETTLE = 1.0
TIMEOUT = 5.0


def sync_box() -> Outbox:
    return Outbox(async_mode=False, settle_s=SETTLE, timeout_s=TIMEOUT)


def async_box() -> Outbox:
    return Outbox(async_mode=True, settle_s=SETTLE, timeout_s=TIMEOUT)


def out(n: int) -> Output:
    return {"n": n}


def numbers(deliveries: list[Delivery]) -> list[list[object]]:
    return [[o["n"] for o in d.outputs] for d in deliveries]


# ---- construction ------------------------------------------------------------------------


@pytest.mark.parametrize(("settle", "timeout"), [(-0.1, 5.0), (1.0, 0.0), (1.0, -1.0)])
def test_rejects_bad_timings(settle: float, timeout: float) -> None:
    with pytest.raises(ValueError):
        Outbox(async_mode=False, settle_s=settle, timeout_s=timeout)


# ---- sync --------------------------------------------------------------------------------


def test_sync_turn_ending_verb_completes_at_once() -> None:
    box = sync_box()
    box.begin_turn(1, 0.0)
    box.add_outputs([out(1)], 0.1)
    assert box.poll(0.1) == []
    box.add_outputs([out(2)], 0.2, turn_ending=True)
    [delivery] = box.poll(0.2)
    assert delivery == Delivery(Channel.RESPONSE, (out(1), out(2)), 1, BatchEnd.TURN_ENDING_VERB)
    assert box.open_turn is None
    assert box.poll(100.0) == []


def test_sync_turn_ending_verb_without_outputs_still_ends_the_turn() -> None:
    # a speech-only `gather` without prompt translates to no activity, yet ends the turn
    box = sync_box()
    box.begin_turn(1, 0.0)
    box.add_outputs([], 0.2, turn_ending=True)
    assert box.deadline() is None
    [delivery] = box.poll(0.2)
    assert (delivery.outputs, delivery.ended_by) == ((), BatchEnd.TURN_ENDING_VERB)


def test_sync_settles_after_idle() -> None:
    box = sync_box()
    box.begin_turn(7, 0.0)
    box.add_outputs([out(1)], 0.5)
    assert box.deadline() == 0.5 + SETTLE
    assert box.poll(0.5 + SETTLE - 0.01) == []
    box.add_outputs([out(2)], 1.0)  # a new output restarts the settle time
    assert box.poll(0.5 + SETTLE) == []
    [delivery] = box.poll(1.0 + SETTLE)
    assert delivery == Delivery(Channel.RESPONSE, (out(1), out(2)), 7, BatchEnd.SETTLED)


def test_sync_turn_without_outputs_settles_empty() -> None:
    box = sync_box()
    box.begin_turn(1, 0.0)
    [delivery] = box.poll(SETTLE)
    assert delivery == Delivery(Channel.RESPONSE, (), 1, BatchEnd.SETTLED)


def test_sync_busy_side_holds_until_timeout() -> None:
    box = sync_box()
    box.begin_turn(1, 0.0)
    box.set_busy(True, 0.0)
    box.add_outputs([out(1)], 0.1)
    assert box.deadline() == TIMEOUT
    assert box.poll(TIMEOUT - 0.01) == []
    [delivery] = box.poll(TIMEOUT)
    assert (delivery.outputs, delivery.ended_by) == ((out(1),), BatchEnd.TIMEOUT)


def test_sync_idle_again_settles_from_the_change() -> None:
    box = sync_box()
    box.begin_turn(1, 0.0)
    box.set_busy(True, 0.0)
    box.add_outputs([out(1)], 0.1)
    box.set_busy(False, 2.0)
    assert box.poll(2.0 + SETTLE - 0.01) == []
    [delivery] = box.poll(2.0 + SETTLE)
    assert delivery.ended_by is BatchEnd.SETTLED


def test_sync_outputs_keep_coming_until_timeout() -> None:
    box = sync_box()
    box.begin_turn(1, 0.0)
    for i in range(10):
        box.add_outputs([out(i)], i * SETTLE / 2)
        assert box.poll(i * SETTLE / 2) == []
    [delivery] = box.poll(TIMEOUT)
    assert delivery.ended_by is BatchEnd.TIMEOUT
    assert numbers([delivery]) == [list(range(10))]


def test_sync_late_outputs_go_with_the_next_response() -> None:
    box = sync_box()
    box.begin_turn(1, 0.0)
    [first] = box.poll(SETTLE)
    assert first.outputs == ()
    box.add_outputs([out(1)], 2.0)
    box.add_outputs([out(2)], 3.0, turn_ending=True)
    assert box.poll(100.0) == []  # no push channel: they wait
    box.begin_turn(2, 200.0)
    box.add_outputs([out(3)], 200.1)
    assert box.poll(200.1) == []  # the stale turn-ending flag does not end the new turn
    [second] = box.poll(200.1 + SETTLE)
    assert second.turn == 2
    assert numbers([second]) == [[1, 2, 3]]


def test_sync_unsolicited_outputs_are_pushed_as_a_batch() -> None:
    box = sync_box()
    box.connect_push()
    box.add_outputs([out(1)], 1.0)
    assert box.deadline() == 1.0 + SETTLE
    assert box.poll(1.5) == []
    box.add_outputs([out(2)], 1.5)
    [delivery] = box.poll(1.5 + SETTLE)
    assert delivery == Delivery(Channel.PUSH, (out(1), out(2)), None, BatchEnd.SETTLED)


def test_sync_unsolicited_batch_ends_at_turn_ending_verb_and_timeout() -> None:
    box = sync_box()
    box.connect_push()
    box.add_outputs([out(1)], 0.0, turn_ending=True)
    [delivery] = box.poll(0.0)
    assert delivery.ended_by is BatchEnd.TURN_ENDING_VERB
    box.set_busy(True, 1.0)
    box.add_outputs([out(2)], 1.0)
    assert box.poll(1.0 + TIMEOUT - 0.01) == []
    [delivery] = box.poll(1.0 + TIMEOUT)
    assert (delivery.channel, delivery.ended_by) == (Channel.PUSH, BatchEnd.TIMEOUT)


def test_sync_unsolicited_without_push_waits_for_next_response() -> None:
    box = sync_box()
    box.add_outputs([out(1)], 0.0)
    assert box.deadline() is None
    assert box.poll(100.0) == []
    box.begin_turn(3, 100.0)
    [delivery] = box.poll(100.0 + SETTLE)
    assert (delivery.channel, delivery.turn) == (Channel.RESPONSE, 3)
    assert numbers([delivery]) == [[1]]


def test_sync_waiting_outputs_go_out_when_push_connects() -> None:
    box = sync_box()
    box.add_outputs([out(1)], 0.0)
    box.connect_push()
    [delivery] = box.poll(TIMEOUT)
    assert (delivery.channel, numbers([delivery])) == (Channel.PUSH, [[1]])


def test_sync_open_turn_is_answered_on_the_response_even_with_push() -> None:
    box = sync_box()
    box.connect_push()
    box.begin_turn(1, 0.0)
    box.add_outputs([out(1)], 0.0, turn_ending=True)
    [delivery] = box.poll(0.0)
    assert delivery.channel is Channel.RESPONSE
    assert box.take_waiting() == ()  # sync: nothing is taken that way


def test_sync_only_one_open_response() -> None:
    box = sync_box()
    box.begin_turn(1, 0.0)
    with pytest.raises(RuntimeError):
        box.begin_turn(2, 0.0)


def test_sync_requeued_push_keeps_order_and_goes_at_next_chance() -> None:
    box = sync_box()
    box.connect_push()
    box.add_outputs([out(1), out(2)], 0.0, turn_ending=True)
    [delivery] = box.poll(0.0)
    box.disconnect_push()
    box.requeue(delivery)
    box.add_outputs([out(3)], 1.0)
    assert box.poll(100.0) == []
    box.connect_push()
    [again] = box.poll(100.0)
    assert numbers([again]) == [[1, 2, 3]]


def test_sync_requeued_push_alone_is_pushed_on_reconnect() -> None:
    box = sync_box()
    box.connect_push()
    box.add_outputs([out(1)], 0.0, turn_ending=True)
    [delivery] = box.poll(0.0)
    box.disconnect_push()
    box.requeue(delivery)
    box.connect_push()
    assert box.deadline() is not None
    [again] = box.poll(0.0)
    assert numbers([again]) == [[1]]


def test_call_ended_completes_open_response() -> None:
    box = sync_box()
    box.begin_turn(1, 0.0)
    box.set_busy(True, 0.0)
    box.add_outputs([out(1)], 0.0)
    box.call_ended()
    assert box.deadline() is None
    [delivery] = box.poll(0.0)
    assert delivery == Delivery(Channel.RESPONSE, (out(1),), 1, BatchEnd.CALL_ENDED)


def test_call_ended_pushes_unsolicited_at_once() -> None:
    box = sync_box()
    box.connect_push()
    box.set_busy(True, 0.0)
    box.add_outputs([out(1)], 0.0)
    box.call_ended()
    [delivery] = box.poll(0.0)
    assert (delivery.channel, delivery.ended_by) == (Channel.PUSH, BatchEnd.CALL_ENDED)


# ---- async -------------------------------------------------------------------------------


def test_async_each_output_pushed_alone_in_order() -> None:
    box = async_box()
    box.connect_push()
    box.begin_turn(1, 0.0)  # no response is ever held in async mode
    assert box.open_turn is None
    box.add_outputs([out(1), out(2)], 0.0)
    box.add_outputs([out(3)], 0.0, turn_ending=True)
    deliveries = box.poll(0.0)
    assert [d.channel for d in deliveries] == [Channel.PUSH] * 3
    assert numbers(deliveries) == [[1], [2], [3]]
    assert box.deadline() is None
    assert box.take_waiting() == ()


def test_async_without_push_outputs_wait_for_the_post_answer() -> None:
    box = async_box()
    box.add_outputs([out(1), out(2)], 0.0)
    assert box.poll(100.0) == []
    assert box.take_waiting() == (out(1), out(2))
    assert box.take_waiting() == ()


def test_async_connect_push_flushes_waiting_first() -> None:
    box = async_box()
    box.add_outputs([out(1)], 0.0)
    box.connect_push()
    box.add_outputs([out(2)], 1.0)
    assert numbers(box.poll(1.0)) == [[1], [2]]


def test_async_requeue_after_failed_push_keeps_order() -> None:
    box = async_box()
    box.connect_push()
    box.add_outputs([out(1), out(2)], 0.0)
    first, second = box.poll(0.0)
    box.disconnect_push()
    box.requeue(first)
    box.add_outputs([out(3)], 0.0)
    box.requeue(second)  # requeued after a later output arrived
    assert [o["n"] for o in box.take_waiting()] == [1, 2, 3]


def test_async_requeue_of_several_deliveries_in_poll_order_keeps_order() -> None:
    # the session requeues every delivery of a poll it could not push, in poll order
    box = async_box()
    box.connect_push()
    box.add_outputs([out(1), out(2), out(3)], 0.0)
    deliveries = box.poll(0.0)
    box.disconnect_push()
    for delivery in deliveries:
        box.requeue(delivery)
    box.connect_push()
    assert numbers(box.poll(0.0)) == [[1], [2], [3]]


# ---- properties --------------------------------------------------------------------------

Op = tuple[object, ...]

ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("turn")),
        st.tuples(st.just("add"), st.integers(0, 3), st.booleans()),
        st.tuples(st.just("busy"), st.booleans()),
        st.tuples(st.just("connect")),
        st.tuples(st.just("disconnect")),
        st.tuples(st.just("fail_push")),
        st.tuples(
            st.just("advance"),
            st.one_of(
                st.sampled_from([0.0, SETTLE / 2, SETTLE, TIMEOUT, TIMEOUT + 1]),
                st.floats(0.0, 2 * TIMEOUT, allow_nan=False),
            ),
        ),
        st.tuples(st.just("end")),
    ),
    max_size=40,
)


@dataclass
class Driver:
    """Uses an Outbox the way session.py does, recording every delivery VAIC received."""

    box: Outbox
    now: float = 0.0
    produced: list[int] = field(default_factory=list)
    turn_ending: set[int] = field(default_factory=set)
    produced_at: list[float] = field(default_factory=list)
    received: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    pushes_to_fail: int = 0
    push: bool = False
    busy: bool = False
    ended: bool = False
    turns: int = 0
    turn: int | None = None
    opened_at: float = 0.0
    opened_index: int = 0  # produced outputs before the open turn
    last_change: float = 0.0  # last output, busy change or turn start
    last_activity: float = 0.0  # also counts verbs that produced no output
    busy_all_turn: bool = False
    turn_ending_in_turn: bool = False
    answered: list[int] = field(default_factory=list)

    @property
    def sync(self) -> bool:
        return not self.box.async_mode

    def delivered(self) -> list[int]:
        return [n for _, batch in self.received for n in batch]

    def apply(self, op: Op) -> None:
        kind = op[0]
        if kind == "turn":
            self.caller_turn()
            return
        if kind == "add":
            count, ending = op[1], op[2]
            assert isinstance(count, int) and isinstance(ending, bool)
            start = len(self.produced)
            numbers = list(range(start, start + count))
            self.produced.extend(numbers)
            self.produced_at.extend([self.now] * count)
            if ending and numbers:
                self.turn_ending.add(numbers[-1])
            if self.turn is not None:
                self.turn_ending_in_turn |= ending
                self.last_activity = self.now
                if numbers:
                    self.last_change = self.now
            self.box.add_outputs([out(n) for n in numbers], self.now, turn_ending=ending)
        elif kind == "busy":
            busy = op[1]
            assert isinstance(busy, bool)
            if busy != self.busy:
                self.last_change = self.last_activity = self.now
            if not busy:
                self.busy_all_turn = False
            self.busy = busy
            self.box.set_busy(busy, self.now)
        elif kind == "connect":
            self.push = True
            self.box.connect_push()
        elif kind == "disconnect":
            self.push = False
            self.box.disconnect_push()
        elif kind == "fail_push":
            self.pushes_to_fail += 1
        elif kind == "advance":
            dt = op[1]
            assert isinstance(dt, float)
            self.now += dt
        elif kind == "end":
            self.ended = True
            self.box.call_ended()
        self.deliver()

    def caller_turn(self) -> None:
        if self.sync:
            if self.turn is not None:
                return  # the session's turn lock: VAIC's next POST waits for this answer
            self.turns += 1
            self.turn = self.turns
            self.opened_at = self.last_change = self.last_activity = self.now
            self.opened_index = len(self.produced)
            self.busy_all_turn = self.busy
            self.turn_ending_in_turn = False
            self.box.begin_turn(self.turn, self.now)
            self.deliver()
        else:
            self.box.begin_turn(self.turns, self.now)
            self.deliver()
            self.record("waiting", self.box.take_waiting())

    def record(self, channel: str, outputs: tuple[Output, ...]) -> None:
        batch = tuple(o["n"] for o in outputs)
        assert all(isinstance(n, int) for n in batch)
        self.received.append((channel, batch))  # type: ignore[arg-type]

    def deliver(self) -> None:
        deliveries = self.box.poll(self.now)
        for delivery in deliveries:
            self.check_delivery(delivery)
            if delivery.channel is Channel.RESPONSE:
                assert self.turn is not None, "a response with no turn open"
                assert delivery.turn == self.turn, "a response for another turn"
                self.answered.append(self.turn)
                self.turn = None
                self.record("response", delivery.outputs)
            elif not self.push:
                self.box.requeue(delivery)
            elif self.pushes_to_fail:
                self.pushes_to_fail -= 1
                self.box.requeue(delivery)
                self.push = False
                self.box.disconnect_push()
            else:
                self.record("push", delivery.outputs)

    def check_delivery(self, delivery: Delivery) -> None:
        assert self.box.push_connected == self.push
        numbers = [o["n"] for o in delivery.outputs]
        if not self.sync:
            assert delivery.channel is Channel.PUSH
            assert len(numbers) == 1, "async: one output per push"
            assert delivery.ended_by is BatchEnd.ASYNC
            return
        if delivery.channel is Channel.PUSH:
            assert numbers, "an empty push"
            assert delivery.turn is None
            return
        if self.busy_all_turn:  # the Voice Gateway side never went idle: no settling
            assert delivery.ended_by is not BatchEnd.SETTLED
        if delivery.ended_by is BatchEnd.CALL_ENDED:
            assert self.ended
        elif delivery.ended_by is BatchEnd.TURN_ENDING_VERB:
            assert self.turn_ending_in_turn
        elif delivery.ended_by is BatchEnd.TIMEOUT:
            assert self.now >= self.opened_at + TIMEOUT
        else:
            assert delivery.ended_by is BatchEnd.SETTLED
            assert not self.busy and self.now >= self.last_change + SETTLE
        # the turn ends at the first turn-ending verb produced for it
        own = [n for n in numbers if isinstance(n, int) and n >= self.opened_index]
        for n in own[:-1]:
            assert n not in self.turn_ending, "output after the turn-ending verb in a response"

    def check_state(self) -> None:
        delivered = self.delivered()
        assert delivered == self.produced[: len(delivered)], "lost, duplicated or reordered"
        if not self.sync:
            assert self.box.open_turn is None
            if self.push:
                assert delivered == self.produced, "async with push: nothing may wait"
            return
        assert self.box.open_turn == self.turn
        if self.turn is not None:
            due = (
                self.ended
                or self.turn_ending_in_turn
                or self.now >= self.opened_at + TIMEOUT
                or (not self.busy and self.now >= self.last_activity + SETTLE)
            )
            assert not due, "an open response that should have completed"
            self.check_deadline()
        elif self.push:
            stale = [n for n in self.produced if self.produced_at[n] + TIMEOUT <= self.now]
            assert set(stale) <= set(delivered), "unsolicited outputs held past the timeout"

    def check_deadline(self) -> None:
        """`deadline()` is when poll delivers the open response, and not earlier."""
        deadline = self.box.deadline()
        assert deadline is not None
        assert deadline > self.now
        early = copy.deepcopy(self.box)
        assert early.poll(self.now + (deadline - self.now) / 2) == []
        on_time = copy.deepcopy(self.box)
        assert len(on_time.poll(deadline)) == 1

    def drain(self) -> None:
        self.box.call_ended()
        self.ended = True
        self.deliver()
        self.pushes_to_fail = 0
        if self.sync:
            assert self.box.open_turn is None
            if self.produced != self.delivered():
                self.push = True
                self.box.connect_push()
                self.deliver()
        else:
            self.record("waiting", self.box.take_waiting())
            self.push = True
            self.box.connect_push()
            self.deliver()


def run_property(async_mode: bool, ops: list[Op]) -> Driver:
    box = Outbox(async_mode=async_mode, settle_s=SETTLE, timeout_s=TIMEOUT)
    driver = Driver(box)
    for op in ops:
        driver.apply(op)
        driver.check_state()
    driver.drain()
    assert driver.delivered() == driver.produced, "not everything delivered exactly once"
    if driver.sync:
        assert driver.answered == list(range(1, driver.turns + 1)), "a turn not answered once"
    return driver


@settings(max_examples=400, deadline=None)
@given(ops=ops_strategy)
def test_property_sync_every_output_exactly_once_in_order(ops: list[Op]) -> None:
    run_property(False, ops)


@settings(max_examples=400, deadline=None)
@given(ops=ops_strategy)
def test_property_async_every_output_exactly_once_in_order(ops: list[Op]) -> None:
    run_property(True, ops)


@settings(max_examples=200, deadline=None)
@given(ops=ops_strategy)
def test_property_websocket_mode_push_always_connected(ops: list[Op]) -> None:
    # WebSocket mode: the VAIC socket is the push channel and is there for the whole call
    for async_mode in (False, True):
        kept = [("connect",)] + [op for op in ops if op[0] not in ("connect", "disconnect")]
        kept = [op for op in kept if op[0] != "fail_push"]
        driver = run_property(async_mode, kept)
        assert all(channel != "waiting" or not batch for channel, batch in driver.received)


def test_property_driver_catches_a_lost_output() -> None:
    """The checks can fail: an Outbox that drops its queue on a turn is caught."""

    class Lossy(Outbox):
        def begin_turn(self, turn: int, now: float) -> None:
            self._queue.clear()
            super().begin_turn(turn, now)

    driver = Driver(Lossy(async_mode=False, settle_s=SETTLE, timeout_s=TIMEOUT))
    driver.apply(("add", 1, False))
    driver.apply(("turn",))
    driver.apply(("advance", TIMEOUT))
    with pytest.raises(AssertionError):
        driver.drain()
        assert driver.delivered() == driver.produced
