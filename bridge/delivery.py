"""Which outputs go to VAIC on which channel, and when: design §3.4, sync and async.

Performs no I/O and reads no clock (`now` is passed in). The session feeds in the caller's
turns, the translated outputs in the order the flow produced them, whether the Voice Gateway
side is still busy, and whether a push channel is connected (the HTTP-mode `websocketURL`, or
the VAIC socket itself in WebSocket mode); `poll` answers with what to deliver now.

- Sync: a caller turn opens a response; it completes at the first turn-ending verb, after
  `settle_s` with the flow idle, or at `timeout_s`, and takes every output waiting. Outputs that
  arrive with no response open are batched by the same rules and pushed if a push channel is
  connected; otherwise they wait for the next response.
- Async: each output is pushed on its own as soon as it is produced; with no push channel it
  waits, and the next response (or the push channel, once connected) takes it first.
An output leaves the queue only when handed to a channel; a failed push is `requeue`d in front,
so nothing is delivered twice and nothing is lost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

Output = dict[str, object]


class Channel(StrEnum):
    RESPONSE = "response"  # the answer to a caller turn (HTTP response, or WS `activities`)
    PUSH = "push"  # unsolicited: HTTP-mode push socket, or the VAIC socket in WebSocket mode


class BatchEnd(StrEnum):
    """Why a sync batch was complete."""

    TURN_ENDING_VERB = "turn_ending_verb"
    SETTLED = "settled"
    TIMEOUT = "timeout"
    CALL_ENDED = "call_ended"
    ASYNC = "async"


@dataclass(frozen=True, slots=True)
class Delivery:
    """Outputs to hand to one channel now; `turn` is the caller turn a response answers.

    `seqs` are the outputs' production numbers: `requeue` puts them back where they belong.
    """

    channel: Channel
    outputs: tuple[Output, ...]
    turn: int | None = None
    ended_by: BatchEnd = BatchEnd.ASYNC
    seqs: tuple[int, ...] = field(default=(), repr=False, compare=False)


class Outbox:
    """One conversation's outputs on their way to VAIC."""

    def __init__(self, *, async_mode: bool, settle_s: float, timeout_s: float) -> None:
        if settle_s < 0 or timeout_s <= 0:
            raise ValueError("settle must be >= 0 and timeout > 0")
        self.async_mode = async_mode
        self._settle_s = settle_s
        self._timeout_s = timeout_s
        self._queue: deque[tuple[int, Output]] = deque()  # (production number, output)
        self._produced = 0
        self._turn: int | None = None  # sync: the caller turn whose response is open
        self._opened_at: float | None = None  # start of the open response or push batch
        self._last_change = 0.0
        self._turn_ending = False
        self._busy = False
        self._ended = False
        self._push = False

    # ---- inputs --------------------------------------------------------------------------

    @property
    def open_turn(self) -> int | None:
        return self._turn

    @property
    def push_connected(self) -> bool:
        return self._push

    def begin_turn(self, turn: int, now: float) -> None:
        """Caller input arrived. Sync: a response for `turn` is now open."""
        if self.async_mode:
            return
        if self._turn is not None:
            raise RuntimeError("a response is already open")
        self._turn = turn
        self._opened_at = now
        self._last_change = now
        self._turn_ending = False

    def add_outputs(
        self, outputs: Iterable[Output], now: float, *, turn_ending: bool = False
    ) -> None:
        """Outputs translated from the flow, in the order it produced them."""
        was_empty = not self._queue
        for output in outputs:
            self._queue.append((self._produced, output))
            self._produced += 1
        if not self._queue:
            # a turn-ending verb that translated to nothing still ends the open turn
            self._turn_ending = self._turn_ending or (turn_ending and self._turn is not None)
            return
        if was_empty and self._turn is None:
            self._opened_at = now  # an unsolicited sync batch starts with its first output
        self._last_change = now
        self._turn_ending = self._turn_ending or turn_ending

    def set_busy(self, busy: bool, now: float) -> None:
        """Whether the Voice Gateway side is still working on an input (an ack pending)."""
        if busy != self._busy:
            self._busy = busy
            self._last_change = now

    def connect_push(self) -> None:
        self._push = True

    def disconnect_push(self) -> None:
        self._push = False

    def call_ended(self) -> None:
        """No more outputs will come: whatever is open completes now."""
        self._ended = True

    def requeue(self, delivery: Delivery) -> None:
        """A push failed before VAIC got it: its outputs go back in front, in order.

        Deliveries may be requeued in any order (the session requeues the rest of a poll in
        poll order): outputs are put back in production order.
        """
        if len(delivery.seqs) != len(delivery.outputs):  # not from `poll`: in front, as given
            self._queue.extendleft(reversed([(-1, output) for output in delivery.outputs]))
        else:
            back = zip(delivery.seqs, delivery.outputs, strict=True)
            self._queue = deque(sorted([*back, *self._queue], key=lambda item: item[0]))
        if self._opened_at is None and self._queue:
            # the batch was complete already: it goes at the next chance, with no new wait
            self._opened_at = self._last_change - self._timeout_s

    # ---- outputs -------------------------------------------------------------------------

    def pending(self) -> list[Output]:
        """The outputs produced and not delivered yet, in order (what a handoff carries)."""
        return [output for _, output in self._queue]

    def take_waiting(self) -> tuple[Output, ...]:
        """Async mode: what waits for the answer to an activities POST (none if pushed)."""
        if not self.async_mode or self._push:
            return ()
        taken = tuple(output for _, output in self._queue)
        self._queue.clear()
        return taken

    def deadline(self) -> float | None:
        """When `poll` may next deliver by time alone."""
        if self.async_mode or self._opened_at is None or self._ended or self._turn_ending:
            return None
        if self._turn is None and not (self._push and self._queue):
            return None
        timeout_at = self._opened_at + self._timeout_s
        if self._busy:
            return timeout_at
        return min(timeout_at, self._last_change + self._settle_s)

    def poll(self, now: float) -> list[Delivery]:
        """Everything to deliver at `now`, in order; taken outputs leave the queue."""
        if self.async_mode:
            if not self._push or not self._queue:
                return []
            pushed = [Delivery(Channel.PUSH, (output,), seqs=(seq,)) for seq, output in self._queue]
            self._queue.clear()
            return pushed
        if self._turn is None and not (self._push and self._queue):
            return []
        ended_by = self._batch_end(now)
        if ended_by is None:
            return []
        delivery = Delivery(
            Channel.RESPONSE if self._turn is not None else Channel.PUSH,
            tuple(output for _, output in self._queue),
            self._turn,
            ended_by,
            tuple(seq for seq, _ in self._queue),
        )
        self._queue.clear()
        self._turn = None
        self._opened_at = None
        self._turn_ending = False
        return [delivery]

    def _batch_end(self, now: float) -> BatchEnd | None:
        if self._ended:
            return BatchEnd.CALL_ENDED
        if self._turn_ending:
            return BatchEnd.TURN_ENDING_VERB
        assert self._opened_at is not None
        if now >= self._opened_at + self._timeout_s:
            return BatchEnd.TIMEOUT
        if not self._busy and now >= self._last_change + self._settle_s:
            return BatchEnd.SETTLED
        return None
