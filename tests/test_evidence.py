"""A plan's evidence: counts read from a real metrics registry as deltas since `open`, the
reservoirs of values, and the Window's JSON round trip and fleet sum."""

from __future__ import annotations

import json
import random
import statistics
from typing import Any

import pytest
from scipy import stats as scipy_stats

from bridge.evidence import FORMAT, RESERVOIR, Evidence, Window, rate, sum_windows
from bridge.metrics import Metrics


def feed(metrics: Metrics, route: str, n: int) -> None:
    """n of everything a plan reads, on `route`."""
    metrics.routing_decisions.labels(route, "voicegateway", "percent").inc(n)
    metrics.routing_decisions.labels(route, "legacy", "percent").inc(2 * n)
    metrics.routing_decisions.labels(route, "legacy", "fallback").inc(1)
    metrics.call_outcomes.labels(route, "voicegateway", "caller_hangup").inc(n)
    metrics.call_outcomes.labels(route, "legacy", "early_hangup").inc(1)
    for _ in range(n):
        metrics.turn_duration.labels(route, "voicegateway", "primary").observe(0.3)
    metrics.turn_duration.labels(route, "legacy", "shadow").observe(7.0)
    metrics.vg_ack_timeouts.labels(route).inc(1)
    metrics.upstream_errors.labels(route, "voicegateway", "connect").inc(1)
    metrics.shadow_comparisons.labels(route, "say", "match").inc(n)
    metrics.shadow_comparisons.labels(route, "say", "mismatch").inc(1)


def expected(n: int) -> dict[str, float]:
    return {
        "decisions|voicegateway|percent": float(n),
        "decisions|legacy|percent": 2.0 * n,
        "decisions|legacy|fallback": 1.0,
        "outcomes|voicegateway|caller_hangup": float(n),
        "outcomes|legacy|early_hangup": 1.0,
        "turns|voicegateway|primary": float(n),  # the histogram's count, not its sum
        "turns|legacy|shadow": 1.0,
        "ack_timeouts": 1.0,
        "upstream_errors|voicegateway|connect": 1.0,
        "comparisons|say|match": float(n),
        "comparisons|say|mismatch": 1.0,
    }


# --- counts ---------------------------------------------------------------------------------


def test_a_route_never_opened_counts_from_the_start() -> None:
    metrics = Metrics()
    evidence = Evidence(metrics)
    feed(metrics, "a", 3)
    feed(metrics, "b", 5)
    assert evidence.window("a").counts == expected(3)
    assert evidence.window("b").counts == expected(5)
    assert evidence.window("nobody").counts == {}


def test_open_counts_only_what_came_after_it_on_that_route() -> None:
    metrics = Metrics()
    evidence = Evidence(metrics)
    feed(metrics, "a", 3)
    feed(metrics, "b", 5)
    evidence.open("a")
    assert evidence.window("a").counts == {}  # nothing since: zero deltas are left out
    feed(metrics, "a", 4)
    feed(metrics, "b", 6)
    assert evidence.window("a").counts == expected(4)
    # b was never opened: everything since the start
    assert evidence.window("b").counts == {k: v + expected(6)[k] for k, v in expected(5).items()}
    # a label set first seen after open counts in full
    metrics.upstream_errors.labels("a", "voicegateway", "timeout").inc(2)
    metrics.shadow_comparisons.labels("a", "play", "missing").inc()
    window = evidence.window("a")
    assert window.count("upstream_errors", "voicegateway", "timeout") == 2.0
    assert window.count("comparisons", "play", "missing") == 1.0
    # reading changes nothing
    assert evidence.window("a").counts == window.counts


def test_open_again_restarts_the_counts() -> None:
    metrics = Metrics()
    evidence = Evidence(metrics)
    evidence.open("a")
    feed(metrics, "a", 4)
    evidence.open("a")
    feed(metrics, "a", 2)
    assert evidence.window("a").counts == expected(2)


def test_metrics_without_a_route_label_of_interest_are_not_read() -> None:
    metrics = Metrics()
    evidence = Evidence(metrics)
    metrics.calls_started.labels("a", "voicegateway", "primary").inc()
    metrics.vg_ack.labels("a").observe(0.1)
    metrics.time_to_first_prompt.labels("a", "voicegateway").observe(0.4)
    metrics.rollout_decisions.labels("a", "promote").inc()
    assert evidence.window("a").counts == {}


def test_window_helpers() -> None:
    metrics = Metrics()
    evidence = Evidence(metrics)
    feed(metrics, "a", 3)
    metrics.turn_duration.labels("a", "voicegateway", "shadow").observe(0.1)
    metrics.shadow_comparisons.labels("a", "transfer_dial", "missing").inc(2)
    window = evidence.window("a")
    assert window.count("decisions", "legacy", "fallback") == 1.0
    assert window.count("decisions", "legacy", "rule") == 0.0
    assert window.total("decisions") == 3 + 6 + 1
    assert window.total("decisions", "legacy") == 7.0
    assert window.total("turns", "voicegateway") == 4.0  # primary and shadow
    assert window.total("turns", "voicegateway", "primary") == 3.0
    assert window.total("ack_timeouts") == 1.0  # a metric with no label kept
    assert window.total("outcomes", "nowhere") == 0.0
    assert window.nodes() == {
        "say": {"match": 3.0, "mismatch": 1.0},
        "transfer_dial": {"missing": 2.0},
    }
    assert window.values("turn_latency", "voicegateway") == []


def test_a_prefix_does_not_match_a_longer_label() -> None:
    window = Window(counts={"turns|voicegateway2|primary": 5.0, "turns|voicegateway|primary": 1.0})
    assert window.total("turns", "voicegateway") == 1.0
    assert Window(counts={"ack_timeouts_x": 4.0}).total("ack_timeouts") == 0.0


# --- values ---------------------------------------------------------------------------------


def test_values_are_kept_only_for_opened_routes() -> None:
    evidence = Evidence(Metrics())
    evidence.observe("a", "turn_latency", "voicegateway", 0.5)
    assert evidence.window("a").samples == {}
    evidence.open("a")
    evidence.observe("a", "turn_latency", "voicegateway", 0.5)
    evidence.observe("a", "turn_latency", "legacy", 0.25)
    evidence.observe("a", "time_to_first_prompt", "legacy", 1.5)
    evidence.observe("b", "turn_latency", "voicegateway", 9.0)
    window = evidence.window("a")
    assert window.values("turn_latency", "voicegateway") == [0.5]
    assert window.values("turn_latency", "legacy") == [0.25]
    assert window.values("time_to_first_prompt", "legacy") == [1.5]
    assert window.seen == {
        ("turn_latency", "voicegateway"): 1,
        ("turn_latency", "legacy"): 1,
        ("time_to_first_prompt", "legacy"): 1,
    }
    assert evidence.window("b").samples == {}
    # the window is a copy
    window.samples[("turn_latency", "voicegateway")].append(99.0)
    window.seen[("turn_latency", "voicegateway")] = 99
    again = evidence.window("a")
    assert again.values("turn_latency", "voicegateway") == [0.5]
    assert again.seen[("turn_latency", "voicegateway")] == 1


def test_open_again_empties_the_values() -> None:
    evidence = Evidence(Metrics())
    evidence.open("a")
    for value in (0.1, 0.2):
        evidence.observe("a", "turn_latency", "voicegateway", value)
    evidence.open("a")
    assert evidence.window("a").samples == {}
    assert evidence.window("a").seen == {}
    evidence.observe("a", "turn_latency", "voicegateway", 0.3)
    assert evidence.window("a").values("turn_latency", "voicegateway") == [0.3]


def test_watch_forgets_routes_without_a_plan() -> None:
    metrics = Metrics()
    evidence = Evidence(metrics)
    feed(metrics, "a", 2)
    evidence.open("a")
    evidence.open("b")
    evidence.observe("a", "turn_latency", "legacy", 0.1)
    evidence.observe("b", "turn_latency", "legacy", 0.2)
    evidence.watch(["b"])
    assert evidence.watched == frozenset({"b"})
    assert evidence.window("a").samples == {}
    assert evidence.window("a").counts == expected(2)  # its snapshot went too
    evidence.observe("a", "turn_latency", "legacy", 0.1)
    assert evidence.window("a").samples == {}
    assert evidence.window("b").values("turn_latency", "legacy") == [0.2]


def test_the_registrys_own_evidence_starts_empty() -> None:
    metrics = Metrics()
    assert isinstance(metrics.evidence, Evidence)
    assert metrics.evidence.watched == frozenset()


def test_the_reservoir_is_bounded_and_a_uniform_sample() -> None:
    evidence = Evidence(Metrics(), rng=random.Random(20240601))
    evidence.open("a")
    stream = 10 * RESERVOIR
    # a trending stream: a reservoir that favoured early or late values would show it
    for i in range(stream):
        evidence.observe("a", "turn_latency", "voicegateway", float(i))
    window = evidence.window("a")
    kept = window.values("turn_latency", "voicegateway")
    assert len(kept) == RESERVOIR
    assert window.seen[("turn_latency", "voicegateway")] == stream
    assert len(set(kept)) == RESERVOIR  # each value at most once
    assert all(0 <= v < stream for v in kept)
    # the mean of a uniform sample without replacement: sd = sqrt((N²-1)/12 / n · (N-n)/(N-1))
    sd = ((stream**2 - 1) / 12 / RESERVOIR * (stream - RESERVOIR) / (stream - 1)) ** 0.5
    assert abs(statistics.fmean(kept) - (stream - 1) / 2) < 4 * sd
    # every tenth of the stream holds about a tenth of the reservoir
    tenths = [0] * 10
    for v in kept:
        tenths[int(v * 10 // stream)] += 1
    assert scipy_stats.chisquare(tenths).pvalue > 0.001, tenths
    # the most recent values are in it too (not frozen after the first RESERVOIR)
    assert sum(v >= stream - RESERVOIR for v in kept) > RESERVOIR // 20


def test_a_short_stream_is_kept_whole_in_order() -> None:
    evidence = Evidence(Metrics(), rng=random.Random(1))
    evidence.open("a")
    for i in range(RESERVOIR):
        evidence.observe("a", "time_to_first_prompt", "legacy", i / 10)
    assert evidence.window("a").values("time_to_first_prompt", "legacy") == [
        i / 10 for i in range(RESERVOIR)
    ]


# --- JSON -----------------------------------------------------------------------------------


def sample_window() -> Window:
    return Window(
        counts={"decisions|voicegateway|percent": 12.0, "ack_timeouts": 1.0},
        samples={
            ("turn_latency", "voicegateway"): [0.25, 0.5],
            ("time_to_first_prompt", "legacy"): [1.0],
        },
        seen={("turn_latency", "voicegateway"): 7, ("time_to_first_prompt", "legacy"): 1},
    )


def test_json_round_trip() -> None:
    window = sample_window()
    doc = window.to_json()
    assert doc["format"] == FORMAT
    text = json.dumps(doc)
    back = Window.from_json(json.loads(text))
    assert back == window
    assert back.to_json() == doc
    assert Window.from_json(Window().to_json()) == Window()


def test_json_of_evidence_from_a_registry() -> None:
    metrics = Metrics()
    evidence = Evidence(metrics, rng=random.Random(3))
    evidence.open("a")
    feed(metrics, "a", 3)
    for i in range(5):
        evidence.observe("a", "turn_latency", "legacy", i * 0.1)
    window = evidence.window("a")
    assert Window.from_json(json.loads(json.dumps(window.to_json()))) == window


def test_from_json_takes_integers_as_floats() -> None:
    doc: dict[str, Any] = {
        "format": FORMAT,
        "counts": {"ack_timeouts": 2},
        "samples": [["turn_latency", "legacy", 2, [1, 2]]],
    }
    window = Window.from_json(doc)
    assert window.counts == {"ack_timeouts": 2.0}
    assert window.values("turn_latency", "legacy") == [1.0, 2.0]
    assert window.seen == {("turn_latency", "legacy"): 2}


def _doc(**changes: Any) -> dict[str, Any]:
    return sample_window().to_json() | changes


ROW = ["turn_latency", "voicegateway", 2, [0.1, 0.2]]


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        "acvg-evidence/1",
        {},
        _doc(format="acvg-evidence/2"),
        {"counts": {}, "samples": []},
        _doc(counts=[]),
        _doc(counts=None),
        _doc(samples={}),
        {"format": FORMAT, "counts": {}},
        _doc(counts={"ack_timeouts": "1"}),
        _doc(counts={"ack_timeouts": True}),
        _doc(counts={"ack_timeouts": None}),
        _doc(counts={"ack_timeouts": float("nan")}),
        _doc(counts={"ack_timeouts": float("inf")}),
        _doc(counts={"ack_timeouts": -1}),
        _doc(counts={"ack_timeouts": 10**400}),
        _doc(samples=[ROW[:3]]),
        _doc(samples=[[*ROW, 1]]),
        _doc(samples=[{"kind": "turn_latency"}]),
        _doc(samples=[["latency", *ROW[1:]]]),
        _doc(samples=[["turn_latency", "shadow", *ROW[2:]]]),
        _doc(samples=[[*ROW[:2], 2.0, ROW[3]]]),
        _doc(samples=[[*ROW[:2], "2", ROW[3]]]),
        _doc(samples=[[*ROW[:2], True, [0.1]]]),
        _doc(samples=[[*ROW[:2], 1, [0.1, 0.2]]]),  # fewer seen than kept
        _doc(samples=[[*ROW[:3], "0.1"]]),
        _doc(samples=[[*ROW[:3], ["0.1", 0.2]]]),
        _doc(samples=[[*ROW[:3], [True, 0.2]]]),
        _doc(samples=[[*ROW[:3], [float("nan"), 0.2]]]),
        _doc(samples=[[*ROW[:3], [0.1, float("-inf")]]]),
    ],
    ids=[
        "none",
        "list",
        "string",
        "empty",
        "other-format",
        "no-format",
        "counts-list",
        "counts-null",
        "samples-object",
        "samples-missing",
        "count-string",
        "count-bool",
        "count-null",
        "count-nan",
        "count-inf",
        "count-negative",
        "count-huge-int",
        "row-short",
        "row-long",
        "row-object",
        "row-kind",
        "row-path",
        "seen-float",
        "seen-string",
        "seen-bool",
        "seen-below-kept",
        "values-string",
        "value-string",
        "value-bool",
        "value-nan",
        "value-inf",
    ],
)
def test_from_json_refuses_anything_to_json_would_not_write(doc: object) -> None:
    with pytest.raises(ValueError):
        Window.from_json(doc)


# --- the fleet's sum ------------------------------------------------------------------------


def test_sum_adds_counts_and_keeps_every_value_below_the_reservoir() -> None:
    one = Window(
        counts={"a": 1.0, "b": 2.0},
        samples={("turn_latency", "legacy"): [1.0, 2.0]},
        seen={("turn_latency", "legacy"): 2},
    )
    two = Window(
        counts={"b": 3.0, "c": 0.5},
        samples={("turn_latency", "legacy"): [3.0], ("turn_latency", "voicegateway"): [9.0]},
        seen={("turn_latency", "legacy"): 1, ("turn_latency", "voicegateway"): 1},
    )
    total = sum_windows([one, two])
    assert total.counts == {"a": 1.0, "b": 5.0, "c": 0.5}
    assert sorted(total.values("turn_latency", "legacy")) == [1.0, 2.0, 3.0]
    assert total.values("turn_latency", "voicegateway") == [9.0]
    assert total.seen == {("turn_latency", "legacy"): 3, ("turn_latency", "voicegateway"): 1}
    # the inputs are left alone
    assert one.values("turn_latency", "legacy") == [1.0, 2.0]
    assert sum_windows([]) == Window()
    assert sum_windows([one]) == one


def test_sum_pools_values_in_proportion_to_what_each_instance_saw() -> None:
    key = ("time_to_first_prompt", "voicegateway")
    busy = Window(samples={key: [1.0] * RESERVOIR}, seen={key: 3 * RESERVOIR})
    quiet = Window(samples={key: [2.0] * RESERVOIR}, seen={key: RESERVOIR})
    idle = Window(samples={key: [3.0] * 10}, seen={key: 10})
    total = sum_windows([busy, quiet, idle], rng=random.Random(5))
    pooled = total.values(*key)
    seen = 4 * RESERVOIR + 10
    assert total.seen[key] == seen
    assert pooled.count(1.0) == round(RESERVOIR * 3 * RESERVOIR / seen)
    assert pooled.count(2.0) == round(RESERVOIR * RESERVOIR / seen)
    assert pooled.count(3.0) == round(RESERVOIR * 10 / seen)
    assert abs(len(pooled) - RESERVOIR) <= 2  # rounding


def test_sum_samples_each_instance_without_replacement() -> None:
    key = ("turn_latency", "voicegateway")
    first = Window(samples={key: [float(i) for i in range(RESERVOIR)]}, seen={key: RESERVOIR})
    second = Window(
        samples={key: [float(RESERVOIR + i) for i in range(RESERVOIR)]}, seen={key: RESERVOIR}
    )
    pooled = sum_windows([first, second], rng=random.Random(9)).values(*key)
    assert len(pooled) == RESERVOIR
    assert len(set(pooled)) == RESERVOIR
    assert sum(v < RESERVOIR for v in pooled) == RESERVOIR // 2
    # a seeded rng makes the sum reproducible
    again = sum_windows([first, second], rng=random.Random(9)).values(*key)
    assert again == pooled


def test_sum_of_windows_from_json() -> None:
    docs = [json.loads(json.dumps(sample_window().to_json())) for _ in range(3)]
    total = sum_windows(Window.from_json(doc) for doc in docs)
    assert total.counts == {"decisions|voicegateway|percent": 36.0, "ack_timeouts": 3.0}
    assert total.seen[("turn_latency", "voicegateway")] == 21
    assert sorted(total.values("turn_latency", "voicegateway")) == [0.25] * 3 + [0.5] * 3


def test_rate() -> None:
    assert rate(1, 4) == 0.25
    assert rate(3, 0) == 0.0
