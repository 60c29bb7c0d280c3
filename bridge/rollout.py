"""Running the routes' migration plans (design §2.7): when a step has been held long enough and
seen enough voicegateway calls, judge it (bridge/gates.py) and act on the verdict.

`Rollout.tick()` does one round for every route with a plan; whoever owns the clock calls it
(bridge/console/plan.py once a second, the tests with an injected clock). Acting goes through
the console's steering (`steer`: override file, atomic reload, audit lines) with `who: "plan"`,
so a plan's change is exactly a person's change; every verdict also gets an audit line of its
own with the gate figures (`setting: "plan"`).

States of a route's plan:
- `running`: on a step, waiting for `hold` and `min_calls`, or re-judged every `evaluate_every`
  after a `hold` verdict;
- `awaiting_approval`: `approve: manual` and the verdict was promote: a person approves;
- `rolled_back`: a failed step went back (previous step, or `force: legacy` at the first); the
  plan stays there until a person resumes it (it does not climb back into what just failed);
- `paused`: someone forced the route, or set a percentage that is not a step: force wins; the
  plan goes on when the route is back on one of its steps and unforced;
- `complete`: on the last step.

A dry run judges, counts and logs the same verdicts on a step it only imagines: nothing moves.
State lives in memory: a restart starts the current step's hold again (it never skips ahead).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from bridge.app import Gateway
from bridge.config import Route
from bridge.evidence import Window
from bridge.gates import Verdict, judge, vg_calls
from bridge.rollout_config import Plan

__all__ = ["PLAN_WHO", "Rollout", "RolloutError"]

log = logging.getLogger("bridge.rollout")
PLAN_WHO = "plan"
HISTORY = 50
StateName = Literal["running", "awaiting_approval", "rolled_back", "paused", "complete"]


class Audit(Protocol):
    def record(self, entry: dict[str, Any]) -> bool: ...


# Changes a route's migration settings as a person would (the console's `steer`, `who: plan`);
# returns None when done, else why it could not.
Act = Callable[[str, dict[str, Any]], str | None]


class RolloutError(Exception):
    """An operator request the plan cannot take: HTTP status, code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _stamp(at: float) -> str:
    when = datetime.fromtimestamp(at, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class PlanState:
    """One route's plan as it runs (module doc)."""

    step: float | None  # the percentage the plan stands on (None: before its first step)
    since: float
    state: StateName = "running"
    reason: str = ""
    verdict: dict[str, Any] | None = None  # the last verdict as `describe` shows it
    next_evaluation: float | None = None
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    forced_by_plan: bool = False


class Rollout:
    """The plans of one gateway (module doc). `audit()` gives the audit log to write to, `act`
    changes a route."""

    def __init__(
        self,
        gateway: Gateway,
        audit: Callable[[], Audit],
        act: Act,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._gateway = gateway
        self._audit = audit
        self._act = act
        self.clock = clock
        self.plans: dict[str, PlanState] = {}
        self.changed = 0  # audit lines written by the last tick (the fleet is told of them)
        # With a cluster (bridge/console/plan.py): only the leader ticks; the others follow the
        # leader's state documents (shown by `describe`, and their windows open with its steps).
        self.leader = True
        self.followed: dict[str, dict[str, Any]] = {}
        self._epochs: dict[str, str] = {}
        self._windows: dict[str, Window] = {}

    # ------------------------------------------------------------ one round

    def tick(self, windows: Mapping[str, Window] | None = None) -> None:
        """Judge and act for every route with a plan (module doc); `windows`: the fleet's
        evidence per route (default: this instance's)."""
        now = self.clock()
        self.changed = 0
        routes = {name: self._gateway.config.routes[name] for name in self.names()}
        evidence = self._gateway.metrics.evidence
        if evidence.watched != frozenset(routes):
            evidence.watch(routes)
        for name in list(self.plans):
            if name not in routes:
                del self.plans[name]
                self._gateway.metrics.rollout_step.remove(name)
        for name, route in routes.items():
            window = (windows or {}).get(name) or self._gateway.metrics.evidence.window(name)
            self._windows[name] = window
            self._tick_route(name, route, now, window)

    def _tick_route(self, name: str, route: Route, now: float, window: Window) -> None:
        plan = route.migration.plan
        assert plan is not None
        current = self.plans.get(name)
        if current is None:
            current = self.plans[name] = self._begin(name, route, plan, now)
        percent = self._percent(route, current, plan)
        if route.migration.force is not None:
            if current.state != "rolled_back" or not current.forced_by_plan:
                self._set(current, "paused", f"force: {route.migration.force} is set; force wins")
            return
        if current.forced_by_plan:  # a person lifted the plan's own force: go on from there
            current.forced_by_plan = False
        # (a reload may have changed the steps under a step the plan stood on)
        if percent is not None and percent not in plan.steps:
            self._set(
                current, "paused", f"voicegateway_percent {percent:g} is not a step of the plan"
            )
            return
        if percent != current.step:
            assert percent is not None
            self._adopt(name, current, percent, now, "steered by a person")
        elif current.state == "paused" and percent is not None:
            # back on a step, unforced: a fresh window from here
            self._adopt(name, current, percent, now, "resumed: the route is back on a step")
        self._gateway.metrics.rollout_step.labels(name).set(current.step or 0.0)
        if current.state in ("awaiting_approval", "rolled_back", "complete"):
            return
        if current.step is None or current.step < plan.steps[0]:
            self._start(name, plan, current, now)
            return
        index = plan.steps.index(current.step)
        if index == len(plan.steps) - 1:
            self._set(current, "complete", f"on the last step, {current.step:g} %")
            return
        calls = vg_calls(window)
        held = now - current.since
        if held < plan.hold or calls < plan.min_calls:
            waits = []
            if held < plan.hold:
                waits.append(f"hold {plan.hold - held:.0f} s more")
            if calls < plan.min_calls:
                waits.append(f"{calls} of {plan.min_calls} voicegateway calls")
            current.reason = "waiting: " + ", ".join(waits)
            current.next_evaluation = current.since + plan.hold
            return
        if current.next_evaluation is not None and now < current.next_evaluation:
            return
        verdict = judge(plan, window, shadow=route.migration.shadow)
        self._record_verdict(name, plan, current, verdict, now, calls)
        if verdict.decision == "promote":
            target = plan.steps[index + 1]
            if plan.approve == "manual":
                self._set(current, "awaiting_approval", f"promote to {target:g} % needs approval")
                return
            self._move(name, plan, current, now, target, verdict.decision)
        elif verdict.decision == "rollback":
            self._roll_back(name, plan, current, now, index)
        else:
            current.next_evaluation = now + plan.evaluate_every
            current.reason = verdict.reason

    # ------------------------------------------------------------ decisions

    def _begin(self, name: str, route: Route, plan: Plan, now: float) -> PlanState:
        for decision in ("promote", "hold", "rollback"):  # each series exists from the start
            self._gateway.metrics.rollout_decisions.labels(name, decision).inc(0)
        restored = _restore(self.followed.get(name), plan)
        if restored is not None:  # a new leader goes on where the last one stood
            return restored
        percent = route.migration.voicegateway_percent
        step = percent if percent in plan.steps else None
        self._gateway.metrics.evidence.open(name)
        self._epochs[name] = _stamp(now)
        return PlanState(step=step, since=now)

    def follow(self, docs: Mapping[str, dict[str, Any]]) -> None:
        """The leader's state documents: a step that began there opens this instance's window."""
        self.followed = dict(docs)
        if self.leader:
            return
        evidence = self._gateway.metrics.evidence
        names = self.names()
        if evidence.watched != frozenset(names):
            evidence.watch(names)
        for name in names:
            since = docs.get(name, {}).get("since")
            if isinstance(since, str) and self._epochs.get(name) != since:
                evidence.open(name)
                self._epochs[name] = since
                self.plans.pop(name, None)  # the leader's, not a stale one of ours

    def epoch(self, name: str) -> str | None:
        """The start of the route's current window, as the fleet names it."""
        return self._epochs.get(name)

    def _percent(self, route: Route, current: PlanState, plan: Plan) -> float | None:
        """The step the route stands on: the real percentage, or the imagined one of a dry run."""
        if plan.dry_run:
            if current.step is not None and current.step not in plan.steps:
                current.step = None  # the steps changed: the imagined climb starts again
            return current.step
        percent = route.migration.voicegateway_percent
        if current.step is None and percent < plan.steps[0]:
            return None  # not started yet
        return percent

    def _adopt(self, name: str, current: PlanState, step: float, now: float, why: str) -> None:
        current.step, current.since = step, now
        current.next_evaluation = None
        self._gateway.metrics.evidence.open(name)
        self._epochs[name] = _stamp(now)
        self._set(current, "running", why)

    def _start(self, name: str, plan: Plan, current: PlanState, now: float) -> None:
        target = plan.steps[0]
        entry = self._entry(name, plan, current, now, "promote", target, "plan started", None, 0)
        self._log_decision(name, current, entry)
        self._move(name, plan, current, now, target, "promote")

    def _record_verdict(
        self, name: str, plan: Plan, current: PlanState, verdict: Verdict, now: float, calls: int
    ) -> None:
        current.verdict = verdict.to_json() | {"at": _stamp(now)}
        index = plan.steps.index(current.step) if current.step is not None else -1
        if verdict.decision == "promote":
            target: float | None = plan.steps[index + 1]
        elif verdict.decision == "rollback":
            target = plan.steps[index - 1] if index > 0 else 0.0
        else:
            target = current.step
        entry = self._entry(
            name, plan, current, now, verdict.decision, target, verdict.reason, verdict, calls
        )
        self._log_decision(name, current, entry)

    def _entry(
        self,
        name: str,
        plan: Plan,
        current: PlanState,
        now: float,
        decision: str,
        target: float | None,
        reason: str,
        verdict: Verdict | None,
        calls: int,
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": _stamp(now),
            "who": PLAN_WHO,
            "route": name,
            "setting": "plan",
            "decision": decision,
            "old": current.step,
            "new": target,
            "dry_run": plan.dry_run,
            "reason": reason,
            "voicegateway_calls": calls,
            "time_on_step_s": round(now - current.since, 3),
        }
        if verdict is not None:
            entry["score"] = None if verdict.score is None else round(verdict.score, 4)
            entry["failed"] = verdict.failed
            entry["gates"] = [
                {
                    "name": g.name,
                    "status": g.status,
                    "figure": None if g.figure is None else round(g.figure, 6),
                    "threshold": g.threshold,
                }
                for g in verdict.gates
            ]
        return entry

    def _log_decision(self, name: str, current: PlanState, entry: dict[str, Any]) -> None:
        self._gateway.metrics.rollout_decisions.labels(name, entry["decision"]).inc()
        current.history.appendleft(entry)
        self._audit().record(entry)
        self.changed += 1
        log.info(
            "plan on route %s: %s %s -> %s (%s)%s",
            name,
            entry["decision"],
            _shown(entry["old"]),
            _shown(entry["new"]),
            entry["reason"],
            " [dry run]" if entry["dry_run"] else "",
        )

    def _move(
        self, name: str, plan: Plan, current: PlanState, now: float, target: float, why: str
    ) -> bool:
        if not plan.dry_run and not self._steer(name, {"voicegateway_percent": target}, current):
            return False
        self._adopt(name, current, target, now, f"{why} to {target:g} %")
        return True

    def _roll_back(self, name: str, plan: Plan, current: PlanState, now: float, index: int) -> None:
        if index > 0:
            target = plan.steps[index - 1]
            if self._move(name, plan, current, now, target, "rolled back"):
                self._set(current, "rolled_back", f"rolled back to {target:g} %")
            return
        if not plan.dry_run:
            if not self._steer(name, {"force": "legacy"}, current):
                return
            current.forced_by_plan = True
        self._adopt(name, current, plan.steps[0], now, "")
        self._set(current, "rolled_back", "rolled back: force legacy at the first step")

    def _steer(self, name: str, change: dict[str, Any], current: PlanState) -> bool:
        failure = self._act(name, change)
        if failure is not None:
            self._set(current, "paused", f"cannot change the route: {failure}")
            log.error("plan on route %s could not act: %s", name, failure)
            return False
        self.changed += len(change)  # one audit line per setting
        return True

    @staticmethod
    def _set(current: PlanState, state: StateName, reason: str) -> None:
        current.state, current.reason = state, reason

    # ------------------------------------------------------------ operators

    def approve(self, name: str, who: str) -> dict[str, Any]:
        """A person approves the pending promotion of `name`."""
        current, plan = self._plan(name)
        if current.state != "awaiting_approval":
            raise RolloutError(409, "nothing_to_approve", f"route {name!r} awaits no approval")
        assert current.step is not None
        old, target = current.step, plan.steps[plan.steps.index(current.step) + 1]
        self.changed = 0
        self._by_person(
            name,
            current,
            lambda: self._move(name, plan, current, self.clock(), target, "approved, promoted"),
        )
        self._log_person(name, plan, current, "approved", old, target, who)
        return self.describe(name)

    def resume(self, name: str, who: str) -> dict[str, Any]:
        """A person lets a rolled-back plan go on from the step it stands on."""
        current, plan = self._plan(name)
        if current.state != "rolled_back":
            raise RolloutError(409, "not_rolled_back", f"route {name!r} was not rolled back")
        route = self._gateway.config.routes[name]
        self.changed = 0
        if current.forced_by_plan and route.migration.force == "legacy" and not plan.dry_run:
            self._by_person(name, current, lambda: self._steer(name, {"force": None}, current))
            current.forced_by_plan = False
        step = current.step or plan.steps[0]
        self._adopt(name, current, step, self.clock(), "resumed")
        self._log_person(name, plan, current, "resumed", step, step, who)
        return self.describe(name)

    @staticmethod
    def _by_person(name: str, current: PlanState, act: Callable[[], bool]) -> None:
        """Do what a person asked; when the route cannot take it, say why (409) and leave the
        plan as it was."""
        state, reason = current.state, current.reason
        if not act():
            failure = current.reason
            current.state, current.reason = state, reason
            raise RolloutError(409, "cannot_act", f"route {name!r}: {failure}")

    def _log_person(
        self,
        name: str,
        plan: Plan,
        current: PlanState,
        decision: str,
        old: float,
        new: float,
        who: str,
    ) -> None:
        entry = self._entry(name, plan, current, self.clock(), decision, new, f"by {who}", None, 0)
        entry |= {"who": who, "old": old}
        current.history.appendleft(entry)
        self._audit().record(entry)
        self.changed += 1

    def _plan(self, name: str) -> tuple[PlanState, Plan]:
        route = self._gateway.config.routes.get(name)
        if route is None or route.migration.plan is None:
            raise RolloutError(404, "not_found", f"route {name!r} has no migration plan")
        current = self.plans.get(name)
        if current is None:
            current = self.plans[name] = self._begin(
                name, route, route.migration.plan, self.clock()
            )
        return current, route.migration.plan

    # ------------------------------------------------------------ reading

    def describe(self, name: str) -> dict[str, Any]:
        """`GET /admin/plan?route=` (design §2.7): the plan, where it stands, the last verdict.
        Not the leader of a cluster: the leader's document, as last read."""
        if not self.leader and name in self.followed and name in self.names():
            return self.followed[name] | {"leader": False}
        current, plan = self._plan(name)
        now = self.clock()
        route = self._gateway.config.routes[name]
        window = self._windows.get(name) or self._gateway.metrics.evidence.window(name)
        return {
            "route": name,
            "plan": plan.model_dump(mode="json", exclude={"gates"})
            | {"gates": [g for g, _ in plan.gates_for(shadow=route.migration.shadow).configured()]},
            "state": current.state,
            "reason": current.reason,
            "step": current.step,
            "step_index": plan.steps.index(current.step) if current.step in plan.steps else None,
            "voicegateway_percent": route.migration.voicegateway_percent,
            "force": route.migration.force,
            "since": _stamp(current.since),
            "time_on_step_s": round(now - current.since, 3),
            "next_evaluation": (
                _stamp(current.next_evaluation) if current.next_evaluation is not None else None
            ),
            "voicegateway_calls": vg_calls(window),
            "verdict": current.verdict,
            "history": list(current.history),
            "forced_by_plan": current.forced_by_plan,
            "leader": True,
        }

    def names(self) -> list[str]:
        return [
            name
            for name, route in self._gateway.config.routes.items()
            if route.migration.plan is not None
        ]


def _instant(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


_STATES = ("running", "awaiting_approval", "rolled_back", "paused", "complete")


def _restore(doc: Mapping[str, Any] | None, plan: Plan) -> PlanState | None:
    """The plan state a `describe` document holds; None when it does not fit this plan."""
    if doc is None:
        return None
    since, step, state = _instant(doc.get("since")), doc.get("step"), doc.get("state")
    if since is None or state not in _STATES or (step is not None and step not in plan.steps):
        return None
    history = doc.get("history")
    verdict = doc.get("verdict")
    restored = PlanState(
        step=float(step) if step is not None else None,
        since=since,
        state=state,
        reason=str(doc.get("reason") or ""),
        verdict=verdict if isinstance(verdict, dict) else None,
        next_evaluation=_instant(doc.get("next_evaluation")),
        forced_by_plan=doc.get("forced_by_plan") is True,
    )
    if isinstance(history, list):
        restored.history.extend(e for e in history if isinstance(e, dict))
    return restored


def _shown(value: object) -> str:
    return "-" if value is None else f"{value:g} %" if isinstance(value, float) else str(value)
