"""The console's last hour: per-minute match rate and turn latency per path, from the metrics.

Pure: a `Reading` is the cumulative counters of the metrics registry at one moment (reading the
in-memory registry does no I/O); `History.observe(reading, now)` takes it with the wall-clock time
it was taken (seconds since the epoch, passed in). Each step (60 s by default) becomes one sample
of what happened in it: the difference between the first reading of the step and the first of
the next. The step in progress is reported too, marked `partial`. Samples older than the span
(an hour) are dropped. A counter that went backwards (a reset) counts from zero.

Across a fleet, `FleetReading` turns the readings of instances that come and go into one
cumulative reading that never goes backwards, for the same `History`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.console.figures import Figures, Turns, read_figures
from bridge.metrics import Metrics

__all__ = [
    "FleetReading",
    "History",
    "PathPoint",
    "Reading",
    "RoutePoint",
    "Sample",
    "Turns",
    "figures_reading",
    "histogram_quantile",
    "read_metrics",
]

PATHS = ("legacy", "voicegateway")


@dataclass(frozen=True)
class Reading:
    """Cumulative counts at one moment: shadow comparisons per route as `(match, total)`, and
    turn latency per `(route, path)` (primary and shadow turns together: the time each path took
    to answer a caller input)."""

    comparisons: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    turns: Mapping[tuple[str, str], Turns] = field(default_factory=dict)


def figures_reading(figures: Figures) -> Reading:
    """The `Reading` of an instance's (or a fleet's) figures."""
    comparisons: dict[str, tuple[float, float]] = {}
    for (route, _, result), value in figures.comparisons.items():
        match, total = comparisons.get(route, (0.0, 0.0))
        comparisons[route] = (match + (value if result == "match" else 0.0), total + value)
    return Reading(comparisons, dict(figures.turns))


def read_metrics(metrics: Metrics) -> Reading:
    """The `Reading` of a metrics registry now."""
    return figures_reading(read_figures(metrics))


def _since(earlier: Reading, later: Reading) -> Reading:
    """What `later` counted since `earlier`, per key of `later`; a count that went backwards
    (a reset) counts from zero."""
    comparisons: dict[str, tuple[float, float]] = {}
    for name, (match, total) in later.comparisons.items():
        match0, total0 = earlier.comparisons.get(name, (0.0, 0.0))
        if total < total0:
            match0 = total0 = 0.0
        comparisons[name] = (match - match0, total - total0)
    turns = {key: t.minus(earlier.turns.get(key, Turns())) for key, t in later.turns.items()}
    return Reading(comparisons, turns)


def _plus(one: Reading, other: Reading) -> Reading:
    comparisons = dict(one.comparisons)
    for name, (match, total) in other.comparisons.items():
        match0, total0 = comparisons.get(name, (0.0, 0.0))
        comparisons[name] = (match0 + match, total0 + total)
    turns = dict(one.turns)
    for key, t in other.turns.items():
        turns[key] = turns.get(key, Turns()).plus(t)
    return Reading(comparisons, turns)


class FleetReading:
    """One cumulative reading for a fleet whose instances come and go: the sum of what each
    instance counted while it was observed. An instance's first reading is its baseline (what it
    counted before is not added); one that is no longer observed keeps what it added, and starts
    from a new baseline if it is observed again."""

    def __init__(self) -> None:
        self._last: dict[str, Reading] = {}
        self._total = Reading()

    def observe(self, readings: Mapping[str, Reading]) -> Reading:
        """Take each instance's reading now (by instance id); the fleet's cumulative reading."""
        for name, reading in readings.items():
            before = self._last.get(name)
            if before is not None:
                self._total = _plus(self._total, _since(before, reading))
        self._last = dict(readings)
        return self._total


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Prometheus' `histogram_quantile` over cumulative rows: linear inside the bucket of rank q;
    None without observations; the largest finite bound when the rank falls in `+Inf`."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


@dataclass(frozen=True)
class PathPoint:
    turns: int
    p50_s: float | None
    p95_s: float | None


@dataclass(frozen=True)
class RoutePoint:
    comparisons: int
    match_rate: float | None  # None without comparisons
    latency: Mapping[str, PathPoint]


@dataclass(frozen=True)
class Sample:
    """What happened on each route during the step starting at `start` (epoch seconds)."""

    start: float
    partial: bool
    routes: Mapping[str, RoutePoint]

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "partial": self.partial,
            "routes": {
                name: {
                    "comparisons": point.comparisons,
                    "match_rate": point.match_rate,
                    "latency": {
                        path: {"turns": p.turns, "p50_s": p.p50_s, "p95_s": p.p95_s}
                        for path, p in point.latency.items()
                    },
                }
                for name, point in self.routes.items()
            },
        }


def _between(earlier: Reading, later: Reading, start: float, partial: bool) -> Sample:
    delta = _since(earlier, later)
    names = {*delta.comparisons, *(route for route, _ in delta.turns)}
    routes: dict[str, RoutePoint] = {}
    for name in sorted(names):
        match, compared = delta.comparisons.get(name, (0.0, 0.0))
        latency: dict[str, PathPoint] = {}
        for path in PATHS:
            turns = delta.turns.get((name, path))
            if turns is not None and turns.count > 0:
                latency[path] = PathPoint(
                    round(turns.count),
                    histogram_quantile(turns.buckets, 0.5),
                    histogram_quantile(turns.buckets, 0.95),
                )
        if compared <= 0 and not latency:
            continue
        rate = match / compared if compared > 0 else None
        routes[name] = RoutePoint(round(compared), rate, latency)
    return Sample(start, partial, routes)


class History:
    """A ring of per-step samples over the last `span_s` seconds (see the module doc)."""

    def __init__(self, step_s: float = 60.0, span_s: float = 3600.0) -> None:
        if step_s <= 0 or span_s < step_s:
            raise ValueError("step_s must be positive and span_s at least one step")
        self.step_s = step_s
        self.span_s = span_s
        self._closed: deque[Sample] = deque(maxlen=math.ceil(span_s / step_s))
        self._open_start: float | None = None
        self._baseline = Reading()
        self._latest = Reading()

    def observe(self, reading: Reading, now: float) -> None:
        """Take a reading made at `now`; a reading from an earlier step than the open one is
        folded into the open step."""
        start = math.floor(now / self.step_s) * self.step_s
        if self._open_start is None:
            self._open_start, self._baseline = start, reading
        elif start > self._open_start:
            self._closed.append(_between(self._baseline, reading, self._open_start, False))
            self._open_start, self._baseline = start, reading
        self._latest = reading

    def samples(self, now: float | None = None) -> list[Sample]:
        """Closed samples within the span (of `now`, or of the open step), oldest first, then
        the open step as a partial sample."""
        if self._open_start is None:
            return []
        newest = self._open_start if now is None else now
        oldest = newest - self.span_s
        out = [s for s in self._closed if s.start > oldest]
        out.append(_between(self._baseline, self._latest, self._open_start, True))
        return out
