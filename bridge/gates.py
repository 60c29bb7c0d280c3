"""Judging one step of a migration plan: each gate's figure against its threshold, a score, and
the verdict `promote`, `hold` or `rollback` (design §2.7). Pure: a plan and a window in, a
verdict out.

- A critical gate that fails decides alone: the step failed.
- The other gates make a score: the weight of those passed over the weight of those judged.
  At or above `pass_score`: promote; below `marginal_score`: the step failed; between: hold.
- A gate without enough data (`min_samples`) is not judged; a critical one without data holds
  the verdict (there is nothing to promote on yet).
- A failed step is `rollback`, or `hold` when the plan says `on_failure: hold`.

Comparisons are voicegateway (x) against legacy (y) over the same window, one-sided (is
voicegateway worse?): distributions with the Mann-Whitney U test after shifting legacy's values
by `tolerance_ms` (a slowdown within it is no regression), outcome rates with the pooled
two-proportion z-test (the Wilson intervals are reported beside it).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.evidence import Window, rate
from bridge.rollout_config import (
    DistributionGate,
    MaxRateGate,
    NodeMatchGate,
    OutcomeGate,
    Plan,
)
from bridge.stats import mann_whitney_u, two_proportion_z_test, wilson_interval

__all__ = ["OUTCOME_OF", "Decision", "GateResult", "Verdict", "judge", "vg_calls"]

Decision = Literal["promote", "hold", "rollback"]
Status = Literal["pass", "fail", "no_data"]

OUTCOME_OF = {
    "early_hangup_rate": "early_hangup",
    "transfer_rate": "transferred",
    "no_input_giveup_rate": "no_input_giveup",
    "error_rate": "error",
}


# upstream_errors kinds that are the bridge giving up shadow work (bridge/shadow.py: shed for
# the core budget, a full shadow queue), not a voicegateway failure
_SHADOW_DROPS = ("shed", "queue_full")


@dataclass(frozen=True)
class GateResult:
    """One gate's judgement: `figure` against `threshold` (`op` says which way passes)."""

    name: str
    status: Status
    critical: bool
    weight: float
    figure: float | None
    threshold: float
    op: Literal[">=", "<="]
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "critical": self.critical,
            "weight": self.weight,
            "figure": _round(self.figure),
            "threshold": self.threshold,
            "op": self.op,
            "detail": self.detail,
            **{k: _round(v) if isinstance(v, float) else v for k, v in self.extra.items()},
        }


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str
    score: float | None
    gates: tuple[GateResult, ...]

    @property
    def failed(self) -> list[str]:
        return [g.name for g in self.gates if g.status == "fail"]

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "reason": self.reason,
            "score": _round(self.score),
            "failed": self.failed,
            "gates": [g.to_json() for g in self.gates],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def vg_calls(window: Window) -> int:
    """Primary calls routed to voicegateway in the window, those that fell back included."""
    return round(
        window.total("decisions", "voicegateway") + window.count("decisions", "legacy", "fallback")
    )


def judge(plan: Plan, window: Window, *, shadow: bool) -> Verdict:
    """The verdict of a step whose evidence is `window` (module doc)."""
    results = tuple(
        _judge_gate(name, gate, window) for name, gate in plan.gates_for(shadow=shadow).configured()
    )
    critical_failed = [g.name for g in results if g.critical and g.status == "fail"]
    scored = [g for g in results if not g.critical and g.status != "no_data"]
    weight = sum(g.weight for g in scored)
    score = sum(g.weight for g in scored if g.status == "pass") / weight if weight else None
    if critical_failed:
        return _failed(plan, f"critical gate failed: {', '.join(critical_failed)}", score, results)
    missing = [g.name for g in results if g.critical and g.status == "no_data"]
    if missing:
        return Verdict("hold", f"not enough data: {', '.join(missing)}", score, results)
    if score is None or score >= plan.pass_score:
        return Verdict(
            "promote",
            "every gate passed"
            if score in (None, 1.0)
            else f"score {score:.2f} >= pass_score {plan.pass_score:g}",
            score,
            results,
        )
    failed = ", ".join(g.name for g in scored if g.status == "fail")
    if score < plan.marginal_score:
        return _failed(
            plan,
            f"score {score:.2f} < marginal_score {plan.marginal_score:g} ({failed})",
            score,
            results,
        )
    return Verdict("hold", f"marginal score {score:.2f} ({failed})", score, results)


def _failed(
    plan: Plan, reason: str, score: float | None, results: tuple[GateResult, ...]
) -> Verdict:
    decision: Decision = "rollback" if plan.on_failure == "rollback" else "hold"
    return Verdict(decision, reason, score, results)


def _judge_gate(name: str, gate: Any, window: Window) -> GateResult:
    if isinstance(gate, NodeMatchGate):
        return _node_match(name, gate, window)
    if isinstance(gate, MaxRateGate):
        return _max_rate(name, gate, window)
    if isinstance(gate, DistributionGate):
        return _distribution(name, gate, window)
    if isinstance(gate, OutcomeGate):
        return _outcome(name, gate, window)
    raise TypeError(f"no judge for gate {name}")  # pragma: no cover - the schema lists them all


def _result(
    name: str,
    gate: Any,
    status: Status,
    figure: float | None,
    threshold: float,
    op: Literal[">=", "<="],
    detail: str,
    **extra: Any,
) -> GateResult:
    return GateResult(
        name, status, gate.critical, gate.weight, figure, threshold, op, detail, extra
    )


def _node_match(name: str, gate: NodeMatchGate, window: Window) -> GateResult:
    rates: dict[str, tuple[float, int]] = {}
    for node, results in window.nodes().items():
        total = round(sum(results.values()))
        if total >= gate.min_samples:
            rates[node] = (results.get("match", 0.0) / total, total)
    if not rates:
        return _result(
            name,
            gate,
            "no_data",
            None,
            gate.min,
            ">=",
            f"no node has {gate.min_samples} shadow comparisons yet",
        )
    below = sorted((r, node) for node, (r, _) in rates.items() if r < gate.min)
    worst_rate, worst = min((r, node) for node, (r, _) in rates.items())
    nodes = {
        node: {"rate": round(r, 6), "comparisons": n} for node, (r, n) in sorted(rates.items())
    }
    if below:
        named = ", ".join(f"{node} {r:.1%}" for r, node in below)
        return _result(
            name,
            gate,
            "fail",
            worst_rate,
            gate.min,
            ">=",
            f"below {gate.min:.1%}: {named}",
            nodes=nodes,
            node=worst,
        )
    return _result(
        name,
        gate,
        "pass",
        worst_rate,
        gate.min,
        ">=",
        f"{len(rates)} nodes, lowest {worst} {worst_rate:.1%}",
        nodes=nodes,
        node=worst,
    )


def _max_rate(name: str, gate: MaxRateGate, window: Window) -> GateResult:
    if name == "fallback_rate":
        fallbacks = window.count("decisions", "legacy", "fallback")
        numerator, denominator, unit = fallbacks, float(vg_calls(window)), "calls"
    else:
        turns = window.total("turns", "voicegateway")
        if name == "ack_timeout_rate":
            numerator = window.total("ack_timeouts")
        else:
            numerator = window.total("upstream_errors", "voicegateway") - sum(
                window.count("upstream_errors", "voicegateway", kind) for kind in _SHADOW_DROPS
            )
        denominator, unit = turns, "turns"
    if denominator < gate.min_samples:
        return _result(
            name,
            gate,
            "no_data",
            None,
            gate.max,
            "<=",
            f"{denominator:.0f} voicegateway {unit}, {gate.min_samples} needed",
        )
    figure = rate(numerator, denominator)
    status: Status = "pass" if figure <= gate.max else "fail"
    return _result(
        name,
        gate,
        status,
        figure,
        gate.max,
        "<=",
        f"{numerator:.0f} of {denominator:.0f} voicegateway {unit}",
        count=round(numerator),
        of=round(denominator),
    )


def _distribution(name: str, gate: DistributionGate, window: Window) -> GateResult:
    vg, legacy = window.values(name, "voicegateway"), window.values(name, "legacy")
    if min(len(vg), len(legacy)) < gate.min_samples:
        return _result(
            name,
            gate,
            "no_data",
            None,
            gate.max_effect,
            "<=",
            f"{len(vg)} voicegateway and {len(legacy)} legacy values, "
            f"{gate.min_samples} each needed",
        )
    shift = gate.tolerance_ms / 1000.0
    test = mann_whitney_u(vg, [v + shift for v in legacy], alternative="greater")
    vg_median, legacy_median = statistics.median(vg), statistics.median(legacy)
    worse = test.p < gate.alpha and test.prob_superiority > gate.max_effect
    medians = f"median {vg_median * 1000:.0f} ms vs legacy {legacy_median * 1000:.0f} ms"
    return _result(
        name,
        gate,
        "fail" if worse else "pass",
        test.prob_superiority,
        gate.max_effect,
        "<=",
        f"{medians}; P(voicegateway > legacy + {gate.tolerance_ms:g} ms) = "
        f"{test.prob_superiority:.2f}, p = {test.p:.2g}",
        p=test.p,
        alpha=gate.alpha,
        median_voicegateway_s=vg_median,
        median_legacy_s=legacy_median,
        n_voicegateway=len(vg),
        n_legacy=len(legacy),
    )


def _outcome(name: str, gate: OutcomeGate, window: Window) -> GateResult:
    outcome = OUTCOME_OF[name]
    n_vg = round(window.total("outcomes", "voicegateway"))
    n_legacy = round(window.total("outcomes", "legacy"))
    if min(n_vg, n_legacy) < gate.min_samples:
        return _result(
            name,
            gate,
            "no_data",
            None,
            gate.max_increase,
            "<=",
            f"{n_vg} voicegateway and {n_legacy} legacy calls ended, "
            f"{gate.min_samples} each needed",
        )
    k_vg = min(n_vg, round(window.count("outcomes", "voicegateway", outcome)))
    k_legacy = min(n_legacy, round(window.count("outcomes", "legacy", outcome)))
    test = two_proportion_z_test(k_vg, n_vg, k_legacy, n_legacy, alternative="greater")
    worse = test.p < gate.alpha and test.difference > gate.max_increase
    return _result(
        name,
        gate,
        "fail" if worse else "pass",
        test.difference,
        gate.max_increase,
        "<=",
        f"{outcome} {rate(k_vg, n_vg):.1%} on voicegateway vs {rate(k_legacy, n_legacy):.1%} "
        f"on legacy, p = {test.p:.2g}",
        p=test.p,
        alpha=gate.alpha,
        voicegateway=[k_vg, n_vg, *wilson_interval(k_vg, n_vg)],
        legacy=[k_legacy, n_legacy, *wilson_interval(k_legacy, n_legacy)],
    )
