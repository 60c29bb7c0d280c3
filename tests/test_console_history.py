"""The console's per-minute history: deltas per step, the open step, the span, resets."""

from __future__ import annotations

import math

import pytest

from bridge.console.history import History, Reading, Turns, histogram_quantile, read_metrics
from bridge.metrics import LATENCY_BUCKETS, Metrics


def _turns(*observations: float) -> Turns:
    bounds = [*LATENCY_BUCKETS, math.inf]
    return Turns(
        float(len(observations)),
        tuple((b, float(sum(1 for o in observations if o <= b))) for b in bounds),
    )


def _reading(match: float, total: float, *latencies: float) -> Reading:
    return Reading({"r": (match, total)}, {("r", "voicegateway"): _turns(*latencies)})


def test_each_step_is_the_difference_between_readings() -> None:
    history = History(step_s=60)
    history.observe(_reading(0, 0), now=120.0)
    history.observe(_reading(8, 10, 0.004, 0.004), now=150.0)
    history.observe(_reading(9, 20, 0.004, 0.004, 0.3), now=185.0)  # closes the step at 120
    history.observe(_reading(9, 20, 0.004, 0.004, 0.3), now=200.0)
    closed, open_ = history.samples()
    assert (closed.start, closed.partial) == (120.0, False)
    point = closed.routes["r"]
    assert (point.comparisons, point.match_rate) == (20, 0.45)
    assert point.latency["voicegateway"].turns == 3
    assert point.latency["voicegateway"].p95_s is not None
    assert point.latency["voicegateway"].p95_s > 0.25
    assert (open_.start, open_.partial, open_.routes) == (180.0, True, {})


def test_the_open_step_shows_what_happened_so_far() -> None:
    history = History(step_s=60)
    assert history.samples() == []
    history.observe(_reading(5, 5), now=0.0)
    history.observe(_reading(7, 8), now=30.0)
    (only,) = history.samples()
    assert only.partial and only.routes["r"].comparisons == 3
    assert only.routes["r"].match_rate == pytest.approx(2 / 3)
    assert only.to_json()["routes"]["r"]["latency"] == {}


def test_samples_older_than_the_span_are_dropped() -> None:
    history = History(step_s=60, span_s=180)
    for minute in range(10):
        history.observe(_reading(minute, minute * 2), now=minute * 60.0)
    starts = [s.start for s in history.samples()]
    assert starts == [420.0, 480.0, 540.0]  # 3 steps: two closed and the open one
    assert [s.start for s in history.samples(now=600.0)] == [480.0, 540.0]


def test_a_counter_reset_counts_from_zero() -> None:
    history = History(step_s=60)
    history.observe(_reading(50, 100, 0.004, 0.004, 0.004), now=0.0)
    history.observe(_reading(1, 2, 0.004), now=30.0)
    (only,) = history.samples()
    assert (only.routes["r"].comparisons, only.routes["r"].match_rate) == (2, 0.5)
    assert only.routes["r"].latency["voicegateway"].turns == 1


def test_invalid_steps_are_refused() -> None:
    with pytest.raises(ValueError):
        History(step_s=0)
    with pytest.raises(ValueError):
        History(step_s=60, span_s=30)


def test_histogram_quantile() -> None:
    assert histogram_quantile([], 0.5) is None
    assert histogram_quantile([(1.0, 0.0), (math.inf, 0.0)], 0.5) is None
    rows = [(0.01, 2.0), (0.1, 4.0), (math.inf, 4.0)]
    assert histogram_quantile(rows, 0.5) == pytest.approx(0.01)
    assert histogram_quantile(rows, 0.75) == pytest.approx(0.055)
    assert histogram_quantile([(0.01, 0.0), (math.inf, 3.0)], 0.5) == 0.01


def test_read_metrics_sums_roles_and_nodes() -> None:
    metrics = Metrics()
    metrics.shadow_comparisons.labels("r", "say", "match").inc(3)
    metrics.shadow_comparisons.labels("r", "play", "mismatch").inc(1)
    metrics.turn_duration.labels("r", "legacy", "primary").observe(0.004)
    metrics.turn_duration.labels("r", "legacy", "shadow").observe(0.02)
    reading = read_metrics(metrics)
    assert reading.comparisons == {"r": (3.0, 4.0)}
    legacy = reading.turns[("r", "legacy")]
    assert legacy.count == 2
    assert dict(legacy.buckets)[0.005] == 1 and dict(legacy.buckets)[math.inf] == 2
