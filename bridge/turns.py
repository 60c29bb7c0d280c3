"""Which outputs go to VAIC in which response: the sync-turn rules of design §3.4.

Performs no I/O and reads no clock: `now` is passed in. The session feeds it the caller's turns,
the translated outputs and whether the Voice Gateway side is still busy (an ack pending); it
answers when the pending response is complete and with what. Outputs never get lost: those that
arrive while no response is pending wait for the next one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum


class TurnEnd(StrEnum):
    """Why a sync response went out."""

    TURN_ENDING_VERB = "turn_ending_verb"
    SETTLED = "settled"
    TIMEOUT = "timeout"
    CALL_ENDED = "call_ended"


@dataclass(frozen=True, slots=True)
class Response:
    """A complete sync response: the turn it answers, its outputs and why it ended."""

    turn: int
    outputs: tuple[dict[str, object], ...]
    ended_by: TurnEnd


class TurnCollector:
    """Collects outputs of a conversation and cuts them into sync responses."""

    def __init__(self, *, settle_s: float, timeout_s: float) -> None:
        if settle_s < 0 or timeout_s <= 0:
            raise ValueError("settle must be >= 0 and timeout > 0")
        self._settle_s = settle_s
        self._timeout_s = timeout_s
        self._queued: deque[dict[str, object]] = deque()
        self._turn: int | None = None
        self._started_at = 0.0
        self._last_change = 0.0
        self._busy = False
        self._complete: TurnEnd | None = None
        self._ended = False

    @property
    def pending_turn(self) -> int | None:
        """The turn whose response is being collected, if any."""
        return self._turn

    def begin_turn(self, turn: int, now: float) -> None:
        """Caller input arrived: a response is now pending for `turn`."""
        if self._turn is not None:
            raise RuntimeError("a response is already pending")
        self._turn = turn
        self._started_at = now
        self._last_change = now
        self._complete = TurnEnd.CALL_ENDED if self._ended else None

    def add_outputs(
        self, outputs: list[dict[str, object]], now: float, *, turn_ending: bool = False
    ) -> None:
        """Outputs translated from the flow, in the order it produced them."""
        self._queued.extend(outputs)
        self._last_change = now
        if turn_ending and self._turn is not None and self._complete is None:
            self._complete = TurnEnd.TURN_ENDING_VERB

    def set_busy(self, busy: bool, now: float) -> None:
        """Whether the Voice Gateway side is still working on the input (an ack pending)."""
        if busy != self._busy:
            self._busy = busy
            self._last_change = now

    def call_ended(self) -> None:
        """No more outputs will come: the pending response (and any later one) ends now."""
        self._ended = True
        if self._turn is not None and self._complete is None:
            self._complete = TurnEnd.CALL_ENDED

    def deadline(self) -> float | None:
        """When `poll` may next complete the pending response by time alone."""
        if self._turn is None or self._complete is not None:
            return None
        timeout_at = self._started_at + self._timeout_s
        if self._busy:
            return timeout_at
        return min(timeout_at, self._last_change + self._settle_s)

    def poll(self, now: float) -> Response | None:
        """The pending response, if it is complete at `now`; it is then no longer pending."""
        if self._turn is None:
            return None
        ended_by = self._complete
        if ended_by is None:
            if now >= self._started_at + self._timeout_s:
                ended_by = TurnEnd.TIMEOUT
            elif not self._busy and now >= self._last_change + self._settle_s:
                ended_by = TurnEnd.SETTLED
            else:
                return None
        response = Response(self._turn, tuple(self._queued), ended_by)
        self._queued.clear()
        self._turn = None
        self._complete = None
        return response

    def take_queued(self) -> list[dict[str, object]]:
        """Outputs waiting with no response pending (for a push channel)."""
        if self._turn is not None:
            return []
        taken = list(self._queued)
        self._queued.clear()
        return taken
