"""Judging a plan's step: each gate's figure and status from a hand-built window, the p-values
against scipy (a test peer), and how the gates make the verdict."""

from __future__ import annotations

import json
from statistics import NormalDist
from typing import Any

import pytest
from scipy import stats as scipy_stats

from bridge.evidence import Window
from bridge.gates import OUTCOME_OF, GateResult, Verdict, judge, vg_calls
from bridge.rollout_config import (
    DistributionGate,
    Gates,
    MaxRateGate,
    NodeMatchGate,
    OutcomeGate,
    Plan,
)
from bridge.stats import mann_whitney_u, two_proportion_z_test, wilson_interval

Counts = dict[str, float]


# --- building windows by hand ---------------------------------------------------------------


def decisions(vg: int, legacy: int, fallbacks: int = 0) -> Counts:
    return {
        "decisions|voicegateway|percent": float(vg),
        "decisions|legacy|percent": float(legacy),
        "decisions|legacy|fallback": float(fallbacks),
    }


def outcomes(path: str, ended: int, **outcome: int) -> Counts:
    """`ended` calls on `path`: `outcome` counts as given, caller_hangup the rest."""
    out = {f"outcomes|{path}|{name}": float(k) for name, k in outcome.items()}
    out[f"outcomes|{path}|caller_hangup"] = float(ended - sum(outcome.values()))
    return out


def comparisons(node: str, match: int, **others: int) -> Counts:
    out = {f"comparisons|{node}|match": float(match)}
    out.update({f"comparisons|{node}|{result}": float(k) for result, k in others.items()})
    return out


def spread(n: int, mean: float, sd: float = 0.1) -> list[float]:
    """n evenly spaced quantiles of a normal distribution: a smooth sample with no ties."""
    dist = NormalDist(mean, sd)
    return [dist.inv_cdf((i + 0.5) / n) for i in range(n)]


def window(*parts: Counts, samples: dict[tuple[str, str], list[float]] | None = None) -> Window:
    counts: Counts = {}
    for part in parts:
        counts.update(part)
    held = samples or {}
    return Window(counts=counts, samples=held, seen={k: len(v) for k, v in held.items()})


def plan_with(**gates: Any) -> Plan:
    return Plan(steps=[5, 50, 100], gates=Gates(**gates))


def one_gate(name: str, gate: Any, evidence: Window, *, shadow: bool = False) -> GateResult:
    verdict = judge(plan_with(**{name: gate}), evidence, shadow=shadow)
    assert [g.name for g in verdict.gates] == [name]
    return verdict.gates[0]


def healthy(n: int = 200) -> Window:
    """A step where voicegateway does as well as legacy on everything the defaults judge."""
    return window(
        decisions(n, n),
        outcomes("voicegateway", n, transferred=n // 10, error=1),
        outcomes("legacy", n, transferred=n // 10, error=1),
        {"turns|voicegateway|primary": 10.0 * n, "turns|legacy|primary": 10.0 * n},
        comparisons("say", 100),
        comparisons("play", 40),
        samples={
            ("turn_latency", "voicegateway"): spread(n, 0.8),
            ("turn_latency", "legacy"): spread(n, 0.8),
            ("time_to_first_prompt", "voicegateway"): spread(n, 1.2),
            ("time_to_first_prompt", "legacy"): spread(n, 1.2),
        },
    )


def test_vg_calls_counts_fallbacks_as_voicegateway_calls() -> None:
    assert vg_calls(window(decisions(95, 300, fallbacks=5))) == 100
    rules = {"decisions|voicegateway|rule": 7.0, "decisions|legacy|rule": 50.0}
    assert vg_calls(window(decisions(0, 10), rules)) == 7
    assert vg_calls(Window()) == 0


# --- node_match_rate ------------------------------------------------------------------------


def test_node_match_rate_names_the_failing_node_and_its_rate() -> None:
    evidence = window(
        comparisons("say", 100),
        comparisons("play", 45, mismatch=4, missing=1),
        comparisons("hangup", 2, mismatch=3),  # 5 comparisons: not judged yet
    )
    result = one_gate("node_match_rate", NodeMatchGate(), evidence, shadow=True)
    assert result.status == "fail"
    assert result.critical
    assert result.figure == pytest.approx(0.9)
    assert (result.threshold, result.op) == (0.99, ">=")
    assert result.detail == "below 99.0%: play 90.0%"
    assert result.extra["node"] == "play"
    assert result.extra["nodes"] == {
        "play": {"rate": 0.9, "comparisons": 50},
        "say": {"rate": 1.0, "comparisons": 100},
    }


def test_node_match_rate_lists_every_failing_node_worst_first() -> None:
    evidence = window(
        comparisons("say", 97, mismatch=3),
        comparisons("play", 10, mismatch=10),
        comparisons("transfer_dial", 30),
    )
    result = one_gate("node_match_rate", NodeMatchGate(min=0.98), evidence, shadow=True)
    assert result.status == "fail"
    assert result.detail == "below 98.0%: play 50.0%, say 97.0%"
    assert result.figure == 0.5
    assert result.extra["node"] == "play"


def test_node_match_rate_passes_on_the_lowest_node() -> None:
    evidence = window(comparisons("say", 199, mismatch=1), comparisons("play", 40))
    result = one_gate("node_match_rate", NodeMatchGate(), evidence, shadow=True)
    assert result.status == "pass"
    assert result.figure == 0.995
    assert result.detail == "2 nodes, lowest say 99.5%"
    assert result.extra["node"] == "say"


def test_node_match_rate_without_enough_comparisons() -> None:
    evidence = window(comparisons("say", 5, mismatch=5))
    result = one_gate("node_match_rate", NodeMatchGate(min_samples=20), evidence, shadow=True)
    assert (result.status, result.figure) == ("no_data", None)
    assert result.detail == "no node has 20 shadow comparisons yet"
    assert one_gate("node_match_rate", NodeMatchGate(), Window(), shadow=True).status == "no_data"
    # min_samples is what decides
    small = one_gate("node_match_rate", NodeMatchGate(min_samples=10), evidence, shadow=True)
    assert (small.status, small.figure) == ("fail", 0.5)


# --- the voicegateway rates -----------------------------------------------------------------


def test_fallback_rate() -> None:
    failing = one_gate("fallback_rate", MaxRateGate(max=0.02), window(decisions(95, 400, 5)))
    assert failing.status == "fail"
    assert failing.figure == 0.05
    assert (failing.threshold, failing.op) == (0.02, "<=")
    assert failing.detail == "5 of 100 voicegateway calls"
    assert (failing.extra["count"], failing.extra["of"]) == (5, 100)
    passing = one_gate("fallback_rate", MaxRateGate(max=0.02), window(decisions(98, 400, 2)))
    assert (passing.status, passing.figure) == ("pass", 0.02)  # at the limit passes
    none = one_gate("fallback_rate", MaxRateGate(), window(decisions(100, 400, 0)))
    assert (none.status, none.figure) == ("pass", 0.0)


def test_fallback_rate_without_enough_calls() -> None:
    result = one_gate("fallback_rate", MaxRateGate(), window(decisions(15, 1000, 4)))
    assert (result.status, result.figure) == ("no_data", None)
    assert result.detail == "19 voicegateway calls, 20 needed"
    # legacy calls are no voicegateway calls
    assert one_gate("fallback_rate", MaxRateGate(), window(decisions(0, 1000))).status == "no_data"


def test_ack_timeout_rate_per_voicegateway_turn() -> None:
    turns = {
        "turns|voicegateway|primary": 150.0,
        "turns|voicegateway|shadow": 50.0,
        "turns|legacy|primary": 5000.0,
    }
    failing = one_gate(
        "ack_timeout_rate", MaxRateGate(max=0.01), window(turns, {"ack_timeouts": 3})
    )
    assert (failing.status, failing.figure) == ("fail", 0.015)
    assert failing.detail == "3 of 200 voicegateway turns"
    passing = one_gate(
        "ack_timeout_rate", MaxRateGate(max=0.01), window(turns, {"ack_timeouts": 2})
    )
    assert (passing.status, passing.figure) == ("pass", 0.01)
    clean = one_gate("ack_timeout_rate", MaxRateGate(), window(turns))
    assert (clean.status, clean.figure) == ("pass", 0.0)
    few = one_gate("ack_timeout_rate", MaxRateGate(min_samples=500), window(turns))
    assert few.status == "no_data"
    assert few.detail == "200 voicegateway turns, 500 needed"


def test_upstream_error_rate_counts_voicegateway_errors_only() -> None:
    turns = {"turns|voicegateway|primary": 100.0, "turns|legacy|primary": 100.0}
    errors = {
        "upstream_errors|voicegateway|connect": 3.0,
        "upstream_errors|voicegateway|closed": 2.0,
        "upstream_errors|legacy|timeout": 40.0,
    }
    result = one_gate("upstream_error_rate", MaxRateGate(max=0.02), window(turns, errors))
    assert (result.status, result.figure) == ("fail", 0.05)
    assert (result.extra["count"], result.extra["of"]) == (5, 100)
    errors = {"upstream_errors|voicegateway|connect": 1.0, "upstream_errors|legacy|x": 40.0}
    passing = one_gate("upstream_error_rate", MaxRateGate(max=0.02), window(turns, errors))
    assert (passing.status, passing.figure) == ("pass", 0.01)


def test_upstream_error_rate_leaves_out_shadows_the_bridge_gave_up() -> None:
    # shadows shed for the core budget or dropped on a full queue are the bridge's decision
    # (bridge/shadow.py), counted under the same metric, not voicegateway failing
    turns = {"turns|voicegateway|shadow": 100.0}
    drops = {
        "upstream_errors|voicegateway|shed": 30.0,
        "upstream_errors|voicegateway|queue_full": 5.0,
        "upstream_errors|voicegateway|start_connect": 1.0,
    }
    result = one_gate("upstream_error_rate", MaxRateGate(max=0.02), window(turns, drops))
    assert (result.status, result.figure) == ("pass", 0.01)
    assert result.detail == "1 of 100 voicegateway turns"


# --- distributions --------------------------------------------------------------------------


def latency(vg: list[float], legacy: list[float], kind: str = "turn_latency") -> Window:
    return window(samples={(kind, "voicegateway"): vg, (kind, "legacy"): legacy})


@pytest.mark.parametrize("kind", ["turn_latency", "time_to_first_prompt"])
def test_a_slower_voicegateway_fails(kind: str) -> None:
    vg, legacy = spread(200, 1.3), spread(200, 0.8)  # 0.5 s slower
    gate = DistributionGate(tolerance_ms=100.0)
    result = one_gate(kind, gate, latency(vg, legacy, kind))
    assert result.status == "fail"
    shifted = [v + 0.1 for v in legacy]
    theirs = scipy_stats.mannwhitneyu(vg, shifted, alternative="greater")
    assert result.extra["p"] == pytest.approx(float(theirs.pvalue), rel=1e-7, abs=1e-300)
    assert result.extra["p"] < 1e-20
    assert result.figure == pytest.approx(float(theirs.statistic) / (200 * 200))
    assert result.figure is not None and result.figure > 0.95
    assert (result.threshold, result.op) == (0.6, "<=")
    assert result.extra["median_voicegateway_s"] == pytest.approx(1.3)
    assert result.extra["median_legacy_s"] == pytest.approx(0.8)
    assert (result.extra["n_voicegateway"], result.extra["n_legacy"]) == (200, 200)
    assert result.detail.startswith("median 1300 ms vs legacy 800 ms; ")
    assert "P(voicegateway > legacy + 100 ms) = " in result.detail


@pytest.mark.parametrize("kind", ["turn_latency", "time_to_first_prompt"])
def test_the_same_distribution_passes(kind: str) -> None:
    same = spread(200, 0.8)
    result = one_gate(kind, DistributionGate(tolerance_ms=0.0), latency(same, list(same), kind))
    assert result.status == "pass"
    assert result.figure == 0.5
    theirs = scipy_stats.mannwhitneyu(same, same, alternative="greater")
    assert result.extra["p"] == pytest.approx(float(theirs.pvalue), rel=1e-9)
    # with the default tolerance voicegateway even looks faster
    tolerant = one_gate(kind, DistributionGate(), latency(same, list(same), kind))
    assert tolerant.status == "pass"
    assert tolerant.figure is not None and tolerant.figure < 0.5


def test_a_slowdown_within_the_tolerance_passes() -> None:
    vg, legacy = spread(300, 0.88), spread(300, 0.8)  # 80 ms slower
    strict = one_gate("turn_latency", DistributionGate(tolerance_ms=0.0), latency(vg, legacy))
    assert strict.status == "fail"
    tolerant = one_gate("turn_latency", DistributionGate(tolerance_ms=100.0), latency(vg, legacy))
    assert tolerant.status == "pass"
    ours = mann_whitney_u(vg, [v + 0.1 for v in legacy], alternative="greater")
    assert tolerant.extra["p"] == ours.p
    assert tolerant.figure == ours.prob_superiority


def test_a_significant_but_small_slowdown_passes() -> None:
    # p < alpha, yet P(voicegateway > legacy) barely above a half: not worth a rollback
    vg, legacy = spread(2000, 0.81), spread(2000, 0.8)
    result = one_gate("turn_latency", DistributionGate(tolerance_ms=0.0), latency(vg, legacy))
    assert result.extra["p"] < 0.01
    assert result.figure is not None and 0.5 < result.figure < 0.6
    assert result.status == "pass"


def test_a_large_but_not_significant_slowdown_passes() -> None:
    vg, legacy = spread(20, 0.85, sd=0.3), spread(20, 0.8, sd=0.3)
    gate = DistributionGate(tolerance_ms=0.0, max_effect=0.5)
    result = one_gate("turn_latency", gate, latency(vg, legacy))
    assert result.figure is not None and result.figure > 0.5
    assert result.extra["p"] > gate.alpha
    assert result.status == "pass"


@pytest.mark.parametrize("kind", ["turn_latency", "time_to_first_prompt"])
def test_too_few_values_is_no_data(kind: str) -> None:
    result = one_gate(kind, DistributionGate(), latency(spread(19, 2.0), spread(500, 0.5), kind))
    assert (result.status, result.figure) == ("no_data", None)
    assert result.detail == "19 voicegateway and 500 legacy values, 20 each needed"
    only_vg = window(samples={(kind, "voicegateway"): spread(500, 2.0)})
    assert one_gate(kind, DistributionGate(), only_vg).status == "no_data"


def test_each_distribution_gate_reads_its_own_values() -> None:
    slow_turns = latency(spread(200, 1.3), spread(200, 0.8), "turn_latency")
    assert one_gate("turn_latency", DistributionGate(), slow_turns).status == "fail"
    assert one_gate("time_to_first_prompt", DistributionGate(), slow_turns).status == "no_data"


# --- outcomes -------------------------------------------------------------------------------


def ended(
    vg: dict[str, int], legacy: dict[str, int], n_vg: int = 200, n_legacy: int = 200
) -> Window:
    return window(outcomes("voicegateway", n_vg, **vg), outcomes("legacy", n_legacy, **legacy))


def test_more_early_hangups_fail() -> None:
    evidence = ended({"early_hangup": 60}, {"early_hangup": 10})
    result = one_gate("early_hangup_rate", OutcomeGate(), evidence)
    assert result.status == "fail"
    assert result.figure == pytest.approx(0.25)
    assert (result.threshold, result.op) == (0.02, "<=")
    assert result.detail.startswith("early_hangup 30.0% on voicegateway vs 5.0% on legacy, p = ")
    # the pooled z-test: z² is the uncorrected chi-square of the 2x2 table
    chi2 = scipy_stats.chi2_contingency([[60, 140], [10, 190]], correction=False)
    assert result.extra["p"] == pytest.approx(float(chi2.pvalue) / 2, rel=1e-9)
    assert result.extra["p"] == two_proportion_z_test(60, 200, 10, 200, alternative="greater").p
    # Wilson intervals beside it, as scipy computes them
    k_vg, n_vg, low, high = result.extra["voicegateway"]
    assert (k_vg, n_vg) == (60, 200)
    ci = scipy_stats.binomtest(60, 200).proportion_ci(method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert result.extra["legacy"] == [10, 200, *wilson_interval(10, 200)]


def test_equal_outcome_rates_pass() -> None:
    result = one_gate(
        "early_hangup_rate", OutcomeGate(), ended({"early_hangup": 10}, {"early_hangup": 10})
    )
    assert (result.status, result.figure) == ("pass", 0.0)
    assert result.extra["p"] == pytest.approx(0.5)
    fewer = one_gate(
        "early_hangup_rate", OutcomeGate(), ended({"early_hangup": 2}, {"early_hangup": 30})
    )
    assert fewer.status == "pass"
    assert fewer.figure is not None and fewer.figure < 0
    none = one_gate("early_hangup_rate", OutcomeGate(), ended({}, {}))
    assert (none.status, none.figure, none.extra["p"]) == ("pass", 0.0, 1.0)


def test_a_significant_increase_within_max_increase_passes() -> None:
    evidence = ended({"early_hangup": 1300}, {"early_hangup": 1000}, n_vg=20_000, n_legacy=20_000)
    result = one_gate("early_hangup_rate", OutcomeGate(max_increase=0.02), evidence)
    assert result.extra["p"] < 1e-6
    assert result.figure == pytest.approx(0.015)
    assert result.status == "pass"
    stricter = one_gate("early_hangup_rate", OutcomeGate(max_increase=0.01), evidence)
    assert stricter.status == "fail"


def test_a_large_increase_on_few_calls_is_not_significant() -> None:
    evidence = ended({"early_hangup": 2}, {}, n_vg=20, n_legacy=20)
    result = one_gate("early_hangup_rate", OutcomeGate(), evidence)
    assert result.figure == pytest.approx(0.1)
    assert result.extra["p"] > 0.05
    assert result.status == "pass"


def test_outcome_gate_without_enough_ended_calls() -> None:
    result = one_gate("error_rate", OutcomeGate(), ended({"error": 10}, {}, n_vg=200, n_legacy=19))
    assert (result.status, result.figure) == ("no_data", None)
    assert result.detail == "200 voicegateway and 19 legacy calls ended, 20 each needed"


@pytest.mark.parametrize(("name", "outcome"), sorted(OUTCOME_OF.items()))
def test_each_outcome_gate_judges_its_own_outcome(name: str, outcome: str) -> None:
    worse = ended({outcome: 60}, {outcome: 10})
    result = one_gate(name, OutcomeGate(), worse)
    assert result.status == "fail"
    assert result.detail.startswith(f"{outcome} 30.0% on voicegateway vs 5.0% on legacy")
    others = [other for other in OUTCOME_OF.values() if other != outcome]
    unaffected = ended({others[0]: 60}, {others[0]: 10})
    assert one_gate(name, OutcomeGate(), unaffected).status == "pass"


# --- the verdict ----------------------------------------------------------------------------


FAILING_FALLBACKS = decisions(90, 400, 10)  # 10 %
GOOD_FALLBACKS = decisions(100, 400, 0)


def test_a_critical_failure_rolls_back() -> None:
    plan = plan_with(fallback_rate=MaxRateGate(critical=True), transfer_rate=OutcomeGate())
    evidence = window(FAILING_FALLBACKS, ended({}, {}).counts)
    verdict = judge(plan, evidence, shadow=False)
    assert verdict.decision == "rollback"
    assert verdict.reason == "critical gate failed: fallback_rate"
    assert verdict.failed == ["fallback_rate"]
    assert verdict.score == 1.0  # the others scored, but the critical gate decides alone


def test_a_critical_failure_holds_with_on_failure_hold() -> None:
    plan = Plan(
        steps=[5, 100], on_failure="hold", gates=Gates(fallback_rate=MaxRateGate(critical=True))
    )
    verdict = judge(plan, window(FAILING_FALLBACKS), shadow=False)
    assert verdict.decision == "hold"
    assert verdict.reason == "critical gate failed: fallback_rate"


def test_a_critical_failure_outweighs_missing_data() -> None:
    plan = plan_with(
        fallback_rate=MaxRateGate(critical=True),
        upstream_error_rate=MaxRateGate(critical=True),
        error_rate=OutcomeGate(critical=True),
    )
    verdict = judge(plan, window(FAILING_FALLBACKS), shadow=False)
    assert verdict.decision == "rollback"
    assert verdict.reason == "critical gate failed: fallback_rate"


def test_a_critical_gate_without_data_holds() -> None:
    plan = plan_with(
        fallback_rate=MaxRateGate(critical=True),
        upstream_error_rate=MaxRateGate(critical=True),
        error_rate=OutcomeGate(critical=True),
    )
    verdict = judge(plan, window(GOOD_FALLBACKS), shadow=False)
    assert verdict.decision == "hold"
    assert verdict.reason == "not enough data: upstream_error_rate, error_rate"
    assert verdict.failed == []
    assert verdict.score is None


def score_plan(**scores: Any) -> Plan:
    """Three non-critical gates: fallback_rate (weight 1), ack_timeout_rate (weight 1),
    upstream_error_rate (weight 2)."""
    return Plan(
        steps=[5, 100],
        pass_score=scores.get("pass_score", 0.95),
        marginal_score=scores.get("marginal_score", 0.5),
        on_failure=scores.get("on_failure", "rollback"),
        gates=Gates(
            fallback_rate=MaxRateGate(),
            ack_timeout_rate=MaxRateGate(),
            upstream_error_rate=MaxRateGate(weight=2),
        ),
    )


def scored_window(*, fallbacks: bool, acks: bool, errors: bool) -> Window:
    return window(
        FAILING_FALLBACKS if fallbacks else GOOD_FALLBACKS,
        {"turns|voicegateway|primary": 100.0},
        {"ack_timeouts": 10.0 if acks else 0.0},
        {"upstream_errors|voicegateway|connect": 10.0 if errors else 0.0},
    )


def test_every_gate_passed_promotes() -> None:
    verdict = judge(
        score_plan(), scored_window(fallbacks=False, acks=False, errors=False), shadow=False
    )
    assert verdict.decision == "promote"
    assert verdict.reason == "every gate passed"
    assert verdict.score == 1.0
    assert [g.status for g in verdict.gates] == ["pass", "pass", "pass"]


def test_a_marginal_score_holds() -> None:
    evidence = scored_window(fallbacks=True, acks=False, errors=False)
    verdict = judge(score_plan(), evidence, shadow=False)
    assert verdict.score == 0.75
    assert verdict.decision == "hold"
    assert verdict.reason == "marginal score 0.75 (fallback_rate)"
    # at the marginal score still a hold
    assert judge(score_plan(marginal_score=0.75), evidence, shadow=False).decision == "hold"


def test_a_score_below_marginal_is_a_failure() -> None:
    evidence = scored_window(fallbacks=False, acks=True, errors=True)
    verdict = judge(score_plan(), evidence, shadow=False)
    assert verdict.score == 0.25
    assert verdict.decision == "rollback"
    assert (
        verdict.reason == "score 0.25 < marginal_score 0.5 (ack_timeout_rate, upstream_error_rate)"
    )
    assert verdict.failed == ["ack_timeout_rate", "upstream_error_rate"]
    held = judge(score_plan(on_failure="hold"), evidence, shadow=False)
    assert (held.decision, held.reason) == ("hold", verdict.reason)


def test_a_score_at_pass_score_promotes() -> None:
    evidence = scored_window(fallbacks=True, acks=False, errors=False)
    verdict = judge(score_plan(pass_score=0.75), evidence, shadow=False)
    assert verdict.decision == "promote"
    assert verdict.reason == "score 0.75 >= pass_score 0.75"


def test_gates_without_data_are_not_scored() -> None:
    plan = Plan(
        steps=[5, 100],
        gates=Gates(fallback_rate=MaxRateGate(), transfer_rate=OutcomeGate(weight=50)),
    )
    verdict = judge(plan, window(GOOD_FALLBACKS), shadow=False)
    assert [g.status for g in verdict.gates] == ["pass", "no_data"]
    assert verdict.score == 1.0
    assert verdict.decision == "promote"


def test_only_critical_gates_promote_without_a_score() -> None:
    plan = plan_with(fallback_rate=MaxRateGate(critical=True), transfer_rate=OutcomeGate())
    verdict = judge(plan, window(GOOD_FALLBACKS), shadow=False)
    assert verdict.score is None
    assert (verdict.decision, verdict.reason) == ("promote", "every gate passed")


def test_a_plan_with_no_gates_promotes() -> None:
    verdict = judge(plan_with(), Window(), shadow=True)
    assert (verdict.decision, verdict.score, verdict.gates) == ("promote", None, ())


def test_default_gates_without_shadow() -> None:
    plan = Plan(steps=[5, 50, 100])
    verdict = judge(plan, healthy(), shadow=False)
    names = [g.name for g in verdict.gates]
    assert names == [name for name in Gates.model_fields if name != "node_match_rate"]
    assert [g.status for g in verdict.gates] == ["pass"] * len(names)
    assert (verdict.decision, verdict.reason, verdict.score) == (
        "promote",
        "every gate passed",
        1.0,
    )


def test_default_gates_with_shadow_judge_the_node_match_rate() -> None:
    plan = Plan(steps=[5, 50, 100])
    verdict = judge(plan, healthy(), shadow=True)
    assert [g.name for g in verdict.gates] == list(Gates.model_fields)
    assert verdict.decision == "promote"
    node = verdict.gates[0]
    assert (node.name, node.status, node.critical) == ("node_match_rate", "pass", True)
    # the shadow on, but no comparisons yet: there is nothing to promote on
    no_comparisons = healthy()
    no_comparisons.counts = {
        k: v for k, v in no_comparisons.counts.items() if not k.startswith("comparisons|")
    }
    held = judge(plan, no_comparisons, shadow=True)
    assert (held.decision, held.reason) == ("hold", "not enough data: node_match_rate")
    assert judge(plan, no_comparisons, shadow=False).decision == "promote"


def test_default_gates_roll_back_a_slow_first_prompt() -> None:
    evidence = healthy()
    evidence.samples[("time_to_first_prompt", "voicegateway")] = spread(200, 1.7)
    verdict = judge(Plan(steps=[5, 50, 100]), evidence, shadow=False)
    assert verdict.decision == "rollback"
    assert verdict.reason == "critical gate failed: time_to_first_prompt"


def test_default_gates_hold_on_a_slow_turn_latency() -> None:
    # turn_latency is one of 4 equally weighted non-critical gates by default: 3/4 is below
    # pass_score 0.95 and not below marginal_score 0.75
    evidence = healthy()
    evidence.samples[("turn_latency", "voicegateway")] = spread(200, 1.3)
    verdict = judge(Plan(steps=[5, 50, 100]), evidence, shadow=False)
    assert verdict.failed == ["turn_latency"]
    scored = [g for g in verdict.gates if not g.critical]
    assert [g.name for g in scored] == [
        "ack_timeout_rate",
        "turn_latency",
        "transfer_rate",
        "no_input_giveup_rate",
    ]
    assert verdict.score == 0.75
    assert verdict.decision == "hold"
    assert verdict.reason == "marginal score 0.75 (turn_latency)"


def test_verdict_to_json() -> None:
    evidence = window(decisions(2, 400, 1), {"turns|voicegateway|primary": 3.0})
    plan = Plan(steps=[5, 100], gates=Gates(fallback_rate=MaxRateGate(min_samples=3)))
    verdict = judge(plan, evidence, shadow=False)
    doc = verdict.to_json()
    json.dumps(doc)
    assert doc == {
        "decision": "rollback",
        "reason": "score 0.00 < marginal_score 0.75 (fallback_rate)",
        "score": 0.0,
        "failed": ["fallback_rate"],
        "gates": [
            {
                "name": "fallback_rate",
                "status": "fail",
                "critical": False,
                "weight": 1.0,
                "figure": 0.333333,
                "threshold": 0.01,
                "op": "<=",
                "detail": "1 of 3 voicegateway calls",
                "count": 1,
                "of": 3,
            }
        ],
    }
    assert isinstance(verdict, Verdict)


def test_every_gate_result_is_json() -> None:
    verdict = judge(Plan(steps=[5, 50, 100]), healthy(), shadow=True)
    doc = json.loads(json.dumps(verdict.to_json()))
    assert [g["name"] for g in doc["gates"]] == list(Gates.model_fields)
    time_to_first_prompt = doc["gates"][5]
    assert set(time_to_first_prompt) >= {
        "p",
        "alpha",
        "median_voicegateway_s",
        "median_legacy_s",
        "n_voicegateway",
        "n_legacy",
    }
    assert doc["gates"][9]["voicegateway"][:2] == [1, 200]
