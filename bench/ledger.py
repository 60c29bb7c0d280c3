"""The soak test's ledger: what every simulated call sent and got back, and the verdict on it.

Pure bookkeeping: the load generator reports what VAIC did and saw (with the times it measured)
and the bridge's state at the end; `Ledger.verdict()` checks that every turn was answered exactly
once and never with a 5xx, that every output arrived once and in the order the flow produced it,
that nothing the flow produced was lost, that every call ended, and that the bridge holds no
session afterwards.

The soak flow numbers its outputs: caller input `tK` (or `tK bye`) is answered with `tK p1`,
`tK p2` (or `tK bye p1` and the flow's hangup); the greeting is `t0 p1`, `t0 p2`. So order and
completeness are checked against what the upstream produced, not against what the bridge sent.
A turn may lack its outputs only when an upstream fault cut it (the upstream never saw the input
or its reply died with the socket): it overlaps a fault window that affects the call's path, or
the bridge ended the call with a hangup in it. Those turns are counted, never silently passed.

A fleet run (several instances behind a load balancer) also reports what the upstreams saw: a
caller input that reached an upstream twice, or a call offered to the Voice Gateway anew
(`session:new`) instead of reconnected, is a problem whatever the faults.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

FLOW_HANGUP_REASON = "soak-done"
_TAG = re.compile(r"^t(\d+)( bye)? p(\d)$")


class EndKind(StrEnum):
    CALLER = "caller"  # VAIC hung up (disconnect POST) while the call was up
    FLOW = "flow"  # the flow said goodbye and hung up
    BRIDGE = "bridge"  # the bridge ended the call with a hangup (an upstream failed)


class FaultKind(StrEnum):
    VG_KILLED = "vg_killed"
    LEGACY_503 = "legacy_503"
    SLOW_SHADOW = "slow_shadow"
    # a fleet run's faults
    INSTANCE_KILLED = "instance_killed"  # SIGKILL of one bridge instance
    ROLLING_RESTART = "rolling_restart"  # every instance in turn: SIGTERM, start again
    REDIS_RESTART = "redis_restart"  # the shared store stopped and started again


# Always among the figures' causes of cut turns; a fleet fault only once it happened.
_UPSTREAM_FAULTS = (FaultKind.VG_KILLED, FaultKind.LEGACY_503, FaultKind.SLOW_SHADOW)


@dataclass(frozen=True)
class FaultWindow:
    """A fault active from `start` to `end`; `cuts` are the primary paths whose turns it may
    cut during [start, end + grace] (reconnect backoff, retries)."""

    kind: FaultKind
    start: float
    end: float
    cuts: frozenset[str] = frozenset()
    grace: float = 0.0

    def overlaps(self, begin: float, finish: float) -> bool:
        return begin <= self.end + self.grace and finish >= self.start


@dataclass
class Turn:
    index: int
    sent_at: float
    bye: bool
    statuses: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what the bridge said with a non-200
    done_at: float | None = None  # when its last expected output arrived

    def expected(self) -> list[int]:
        return [1] if self.bye else [1, 2]


@dataclass
class CallRecord:
    call_id: str
    route: str
    mode: str
    path: str
    started_at: float
    create_status: int = 200
    turns: list[Turn] = field(default_factory=list)
    outputs: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    end: EndKind | None = None
    end_status: int | None = None
    ended_at: float | None = None
    create_error: str = ""  # what the bridge said with a non-200 create ...
    end_error: str = ""  # ... or disconnect


@dataclass(frozen=True)
class BridgeState:
    """The bridge after the load: live gauges per (route, path, role), `/readyz` calls, and
    error lines in its log."""

    calls_active: Mapping[tuple[str, str, str], float]
    ready_calls: int
    error_lines: int


@dataclass(frozen=True)
class UpstreamState:
    """What the upstreams saw more than once after a fleet run: per upstream, caller inputs
    that reached it twice in one call; callers the Voice Gateway got a second `session:new` for
    (a call started anew instead of reconnected)."""

    duplicate_inputs: Mapping[str, int]
    second_session_new: int = 0


@dataclass(frozen=True)
class Verdict:
    problems: list[str]
    figures: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.problems


def tag_of(activity: Mapping[str, Any]) -> tuple[int, int] | None:
    """(turn, part) of a numbered flow output, else None."""
    text = activity.get("text")
    if activity.get("type") != "message" or not isinstance(text, str):
        return None
    match = _TAG.match(text)
    return (int(match[1]), int(match[3])) if match else None


def hangup_reason(activity: Mapping[str, Any]) -> str | None:
    """The hangup reason of a `hangup` event (empty string when none given), else None."""
    if activity.get("type") != "event" or activity.get("name") != "hangup":
        return None
    params = activity.get("activityParams")
    reason = params.get("hangupReason") if isinstance(params, Mapping) else None
    return str(reason) if reason is not None else ""


def _said(error: str) -> str:
    return f" ({error})" if error else ""


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


class Ledger:
    """Per-call records plus fault windows and the bridge's final state. `hangups_cut`: a turn
    in which the bridge hung up counts as cut by a fault (an upstream one made it); False when
    no upstream fault is injected (a fleet run), where a bridge hangup is a call dropped."""

    def __init__(self, *, hangups_cut: bool = True) -> None:
        self.hangups_cut = hangups_cut
        self.calls: dict[str, CallRecord] = {}
        self.faults: list[FaultWindow] = []
        self.bridge: BridgeState | None = None
        self.upstream: UpstreamState | None = None
        # requests that went wrong (call id, what) → when sent; for the figures' attribution
        self._troubled: dict[tuple[str, str], float] = {}

    # ---- what the load generator reports -------------------------------------------------

    def call_created(
        self,
        call_id: str,
        route: str,
        mode: str,
        path: str,
        status: int,
        now: float,
        *,
        error: str = "",
    ) -> None:
        self.calls[call_id] = CallRecord(
            call_id, route, mode, path, now, status, create_error=error
        )

    def turn_sent(self, call_id: str, index: int, now: float, *, bye: bool = False) -> None:
        self.calls[call_id].turns.append(Turn(index, now, bye))

    def turn_answered(
        self,
        call_id: str,
        index: int,
        status: int,
        activities: Iterable[Any],
        now: float,
        *,
        error: str = "",
    ) -> None:
        """The bot's reply to a turn (its HTTP answer); its activities count as outputs.
        `error`: what a refusal said (its error code and message)."""
        turn = self._turn(call_id, index)
        turn.statuses.append(status)
        if error:
            turn.errors.append(error)
        self.outputs(call_id, activities, now)

    def turn_failed(self, call_id: str, index: int, reason: str) -> None:
        """No reply at all (timeout, connection lost)."""
        self._turn(call_id, index).failures.append(reason)

    def outputs(self, call_id: str, activities: Iterable[Any], now: float) -> None:
        """Activities that reached VAIC (a response body or the push socket), in order."""
        call = self.calls[call_id]
        for activity in activities:
            if not isinstance(activity, dict):
                continue
            call.outputs.append((now, activity))
            tag = tag_of(activity)
            if tag is None:
                continue
            for turn in call.turns:
                if turn.index == tag[0] and tag[1] == turn.expected()[-1]:
                    turn.done_at = now

    def call_ended(
        self, call_id: str, how: EndKind, status: int | None, now: float, *, error: str = ""
    ) -> None:
        call = self.calls[call_id]
        call.end, call.end_status, call.ended_at = how, status, now
        call.end_error = error

    def fault(self, window: FaultWindow) -> None:
        self.faults.append(window)

    def bridge_final(self, state: BridgeState) -> None:
        self.bridge = state

    def upstream_final(self, state: UpstreamState) -> None:
        self.upstream = state

    def _turn(self, call_id: str, index: int) -> Turn:
        for turn in reversed(self.calls[call_id].turns):
            if turn.index == index:
                return turn
        raise KeyError(f"turn {index} of {call_id} was never sent")

    # ---- the verdict -----------------------------------------------------------------------

    def verdict(self) -> Verdict:
        problems: list[str] = []
        counts: Counter[str] = Counter()
        self._troubled = {}
        for call in self.calls.values():
            self._check_call(call, problems, counts)
        leaked = 0
        if self.bridge is None:
            problems.append("the bridge's final state was never recorded")
        else:
            live = {k: v for k, v in self.bridge.calls_active.items() if v != 0}
            leaked = int(sum(live.values())) + self.bridge.ready_calls
            for labels, value in sorted(live.items()):
                problems.append(f"acvg_calls_active{{{','.join(labels)}}} is {value:g} at the end")
            if self.bridge.ready_calls:
                problems.append(f"/readyz still counts {self.bridge.ready_calls} calls")
            if self.bridge.error_lines:
                problems.append(f"{self.bridge.error_lines} error lines in the bridge log")
        counts["leaked"] = leaked
        if self.upstream is not None:
            for upstream, repeated in sorted(self.upstream.duplicate_inputs.items()):
                counts["duplicates_upstream"] += repeated
                if repeated:
                    problems.append(f"{repeated} caller inputs reached {upstream} twice")
            if self.upstream.second_session_new:
                problems.append(
                    f"{self.upstream.second_session_new} calls offered to the Voice Gateway "
                    "anew (a second session:new) instead of reconnected"
                )
        return Verdict(problems, self._figures(counts))

    def _check_call(self, call: CallRecord, problems: list[str], counts: Counter[str]) -> None:
        name = f"call {call.call_id} ({call.route}/{call.mode}/{call.path})"
        counts["calls"] += 1
        if call.create_status != 200:
            counts["server_errors" if call.create_status >= 500 else "rejected"] += 1
            self._troubled[(call.call_id, "create")] = call.started_at
            problems.append(
                f"{name}: create answered {call.create_status}{_said(call.create_error)}"
            )
            return
        if call.end is None:
            problems.append(f"{name}: never ended")
        else:
            counts[f"ended_{call.end}"] += 1
            if call.end_status not in (200, None):
                self._troubled[(call.call_id, "disconnect")] = call.ended_at or 0.0
                problems.append(
                    f"{name}: disconnect answered {call.end_status}{_said(call.end_error)}"
                )
        for turn in call.turns:
            counts["turns"] += 1
            answers = len(turn.statuses)
            if answers != 1 or turn.failures or any(s != 200 for s in turn.statuses):
                self._troubled[(call.call_id, f"turn {turn.index}")] = turn.sent_at
            if answers != 1 or turn.failures:
                problems.append(
                    f"{name}: turn {turn.index} answered {answers} times {turn.failures}"
                )
                counts["unanswered" if answers == 0 else "multiply_answered"] += 1
            for status in turn.statuses:
                if status != 200:
                    counts["server_errors" if status >= 500 else "rejected"] += 1
                    problems.append(
                        f"{name}: turn {turn.index} answered HTTP {status}"
                        f"{_said('; '.join(turn.errors))}"
                    )
        self._check_outputs(call, name, problems, counts)

    def _check_outputs(
        self, call: CallRecord, name: str, problems: list[str], counts: Counter[str]
    ) -> None:
        ids: set[str] = set()
        seen: set[tuple[int, int]] = set()
        last: tuple[int, int] = (-1, 0)
        hung_up_at: float | None = None
        bridge_hangup_at: float | None = None
        for at, activity in call.outputs:
            counts["outputs"] += 1
            activity_id = activity.get("id")
            if not isinstance(activity_id, str) or not activity_id:
                problems.append(f"{name}: an output without an id")
            elif activity_id in ids:
                counts["duplicates"] += 1
                problems.append(f"{name}: output id delivered twice")
            else:
                ids.add(activity_id)
            reason = hangup_reason(activity)
            if reason is not None:
                if hung_up_at is not None:
                    counts["duplicates"] += 1
                    problems.append(f"{name}: a second hangup")
                hung_up_at = at
                if reason != FLOW_HANGUP_REASON:
                    bridge_hangup_at = at
                    counts["bridge_hangups"] += 1
                continue
            tag = tag_of(activity)
            if tag is None:
                continue
            counts["outputs_checked"] += 1
            if hung_up_at is not None:
                problems.append(f"{name}: output {tag} after the hangup")
            if tag in seen:
                counts["duplicates"] += 1
                problems.append(f"{name}: output {tag} delivered twice")
                continue
            seen.add(tag)
            if tag < last:
                counts["reordered"] += 1
                problems.append(f"{name}: output {tag} after {last}")
            last = max(last, tag)
            if not any(t.index == tag[0] and t.sent_at <= at for t in call.turns):
                problems.append(f"{name}: output {tag} for a turn not yet sent")
        if call.end is EndKind.BRIDGE and bridge_hangup_at is None:
            problems.append(f"{name}: ended by the bridge without a hangup activity")
        if call.end is EndKind.BRIDGE and not self.hangups_cut:
            counts["dropped"] += 1
            self._troubled[(call.call_id, "hangup")] = bridge_hangup_at or 0.0
            problems.append(f"{name}: dropped (the bridge hung up)")
        if call.end is EndKind.FLOW and hung_up_at in (None, bridge_hangup_at):
            problems.append(f"{name}: ended by the flow without its hangup")
        self._check_complete(call, name, seen, bridge_hangup_at, problems, counts)

    def _check_complete(
        self,
        call: CallRecord,
        name: str,
        seen: set[tuple[int, int]],
        bridge_hangup_at: float | None,
        problems: list[str],
        counts: Counter[str],
    ) -> None:
        for i, turn in enumerate(call.turns):
            missing = [p for p in turn.expected() if (turn.index, p) not in seen]
            if not missing:
                counts["turns_complete"] += 1
                continue
            following = call.turns[i + 1].sent_at if i + 1 < len(call.turns) else None
            finish = following or call.ended_at or turn.sent_at
            cut_by = [
                f.kind
                for f in self.faults
                if call.path in f.cuts and f.overlaps(turn.sent_at, finish)
            ]
            hung_up_here = (
                self.hangups_cut
                and bridge_hangup_at is not None
                and turn.sent_at <= bridge_hangup_at <= finish
            )
            if cut_by or hung_up_here:
                counts["turns_cut_by_fault"] += 1
                counts[f"cut_{'bridge_hangup' if hung_up_here else cut_by[0]}"] += 1
                continue
            counts["lost"] += 1
            self._troubled[(call.call_id, f"turn {turn.index}")] = turn.sent_at
            problems.append(f"{name}: turn {turn.index} lost outputs {missing}")
        if call.turns and call.end is EndKind.FLOW and not call.turns[-1].bye:
            problems.append(f"{name}: the flow hung up without being asked to")

    # ---- figures ---------------------------------------------------------------------------

    def latencies(
        self, *, route: str | None = None, path: str | None = None, during: str | None = None
    ) -> list[float]:
        """Seconds from a turn sent to its last output, for complete turns; `during` is a fault
        kind (turns overlapping such a window) or "normal" (overlapping none)."""
        found = []
        for call in self.calls.values():
            if (route and call.route != route) or (path and call.path != path):
                continue
            for turn in call.turns:
                if turn.done_at is None:
                    continue
                kinds = {f.kind for f in self.faults if f.overlaps(turn.sent_at, turn.done_at)}
                if during == "normal" and kinds:
                    continue
                if during not in (None, "normal") and during not in kinds:
                    continue
                found.append(turn.done_at - turn.sent_at)
        return found

    def _troubled_after(self) -> dict[str, int]:
        """Requests that went wrong (refused, failed, or a turn that lost outputs), by the last
        fault that began before they were sent ("none": before any fault)."""
        found: Counter[str] = Counter()
        for sent_at in self._troubled.values():
            before = [f for f in self.faults if f.start <= sent_at]
            found[max(before, key=lambda f: f.start).kind.value if before else "none"] += 1
        return dict(sorted(found.items()))

    def peak_concurrency(self) -> int:
        edges: list[tuple[float, int]] = []
        for call in self.calls.values():
            if call.create_status != 200:
                continue  # never held: the caller moved on to its next call
            edges.append((call.started_at, 1))
            edges.append((call.ended_at if call.ended_at is not None else float("inf"), -1))
        level = peak = 0
        for _, step in sorted(edges):
            level += step
            peak = max(peak, level)
        return peak

    def _figures(self, counts: Counter[str]) -> dict[str, Any]:
        paths = Counter(f"{c.route}/{c.mode}/{c.path}" for c in self.calls.values())
        figures: dict[str, Any] = {
            key: counts[key]
            for key in (
                "calls",
                "turns",
                "turns_complete",
                "turns_cut_by_fault",
                "outputs",
                "outputs_checked",
                "duplicates",
                "reordered",
                "lost",
                "unanswered",
                "multiply_answered",
                "server_errors",
                "rejected",
                "bridge_hangups",
                "dropped",
                "leaked",
            )
        }
        figures["ended"] = {k.value: counts[f"ended_{k}"] for k in EndKind}
        happened = {f.kind for f in self.faults}
        figures["turns_cut"] = {
            "bridge_hangup": counts["cut_bridge_hangup"],
            **{
                k.value: counts[f"cut_{k}"]
                for k in FaultKind
                if k in _UPSTREAM_FAULTS or k in happened
            },
        }
        if self.upstream is not None:
            figures["duplicates_upstream"] = counts["duplicates_upstream"]
            figures["second_session_new"] = self.upstream.second_session_new
        figures["troubled_after"] = self._troubled_after()
        figures["calls_by_route_mode_path"] = dict(sorted(paths.items()))
        figures["peak_concurrent_calls"] = self.peak_concurrency()
        figures["faults"] = [
            {"kind": f.kind.value, "start": round(f.start, 2), "end": round(f.end, 2)}
            for f in self.faults
        ]
        all_turns = self.latencies()
        figures["turn_latency_ms"] = {
            "p50": 1000 * statistics.median(all_turns) if all_turns else float("nan"),
            "p99": 1000 * percentile(all_turns, 99),
        }
        return figures
