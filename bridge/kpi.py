"""One call's voice KPIs (design §2.7): how it ended for the caller, how long the caller waited
for the first prompt, its turns, no-input events and duration — from the inputs the session
received and the outputs VAIC got. Pure: the session passes the times in.

Outcomes, judged in this order when the call ends:
- `error`: the call ended in an error, idled out (`expired`) or was ended by a drain;
- `no_input_giveup`: the bot hung up right after no-input events (the caller said nothing);
- `bot_hangup`: the bot hung up;
- `transferred`: the bot transferred the caller (and said nothing after it);
- `early_hangup`: the caller left before the first prompt, or within `early_hangup_s` of the
  call's start;
- `caller_hangup`: the caller hung up.

A call that continues on another instance (a handoff) is judged there: the instance that
took it over counts its outcome; its time to first prompt and duration are only known where
its start was seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bridge.metrics import Metrics

__all__ = ["CallKpi", "Outcome"]

_ERROR_REASONS = frozenset({"error", "expired", "drained"})


class Outcome(StrEnum):
    CALLER_HANGUP = "caller_hangup"
    BOT_HANGUP = "bot_hangup"
    TRANSFERRED = "transferred"
    NO_INPUT_GIVEUP = "no_input_giveup"
    ERROR = "error"
    EARLY_HANGUP = "early_hangup"


def _name(activity: Mapping[str, Any]) -> str:
    name = activity.get("name")
    return name.lower() if isinstance(name, str) else ""


def _is_prompt(activity: Mapping[str, Any]) -> bool:
    kind = activity.get("type")
    return (kind == "message" and bool(activity.get("text"))) or (
        kind == "event" and _name(activity) == "playurl"
    )


@dataclass(slots=True)
class CallKpi:
    early_hangup_s: float = 5.0
    started_at: float | None = None  # the start event's arrival, if this instance saw it
    first_prompt_at: float | None = None
    turns: int = 0
    no_inputs: int = 0
    _trailing_no_input: bool = False
    _ending: str | None = None  # the bot's last `hangup`/`transfer`, unless it spoke after it

    def inputs(self, now: float, activities: Iterable[Mapping[str, Any]]) -> None:
        """A caller turn arrived."""
        self.turns += 1
        for activity in activities:
            name = _name(activity) if activity.get("type") == "event" else ""
            if name == "start" and self.started_at is None:
                self.started_at = now
            no_input = name == "nouserinput"
            self.no_inputs += no_input
            self._trailing_no_input = no_input

    def delivered(self, now: float, outputs: Iterable[Mapping[str, Any]]) -> None:
        """VAIC got these outputs."""
        for activity in outputs:
            if _is_prompt(activity):
                if self.first_prompt_at is None:
                    self.first_prompt_at = now
                self._ending = None
            elif activity.get("type") == "event" and _name(activity) in ("hangup", "transfer"):
                self._ending = _name(activity)

    def outcome(self, now: float, reason: str) -> Outcome:
        """How the call ended, `reason` in the words of `acvg_calls_ended_total`."""
        if reason in _ERROR_REASONS:
            return Outcome.ERROR
        if self._ending == "hangup":
            return Outcome.NO_INPUT_GIVEUP if self._trailing_no_input else Outcome.BOT_HANGUP
        if self._ending == "transfer" or reason == "transferred":
            return Outcome.TRANSFERRED
        if reason == "bot_disconnected":
            return Outcome.BOT_HANGUP
        if self.first_prompt_at is None and self.started_at is not None:
            return Outcome.EARLY_HANGUP
        if self.started_at is not None and now - self.started_at < self.early_hangup_s:
            return Outcome.EARLY_HANGUP
        return Outcome.CALLER_HANGUP

    def record(self, metrics: Metrics, route: str, path: str, now: float, reason: str) -> None:
        """The call ended: count its outcome and observe what this instance measured."""
        metrics.call_outcomes.labels(route, path, self.outcome(now, reason).value).inc()
        metrics.no_input_events.labels(route, path).inc(self.no_inputs)  # 0: the series exists
        if self.started_at is None:
            return
        if self.first_prompt_at is not None:
            wait = self.first_prompt_at - self.started_at
            metrics.time_to_first_prompt.labels(route, path).observe(max(0.0, wait))
            metrics.evidence.observe(route, "time_to_first_prompt", path, max(0.0, wait))
        metrics.call_turns.labels(route, path).observe(self.turns)
        metrics.call_duration.labels(route, path).observe(max(0.0, now - self.started_at))
