"""What a migration plan judges a step on: each path's counts and samples since the step began.

Counts come from the metrics registry (primary calls decided per path, fallbacks, outcomes,
turns, ack timeouts, upstream errors, shadow comparisons per node), as the difference between
now and a snapshot taken when the window opened, so the serving path pays nothing for them.
Distributions need the values themselves: primary turn latencies and times to first prompt are
kept per route and path in a uniform reservoir (Algorithm R, bounded), only for routes with a
plan, and emptied when the window opens again.

A `Window` is plain data, JSON-serialisable and summable, so a cluster's leader can judge the
fleet's windows as one (bridge/rollout.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from prometheus_client.metrics import MetricWrapperBase

__all__ = ["FORMAT", "RESERVOIR", "Evidence", "Window", "sum_windows"]

FORMAT = "acvg-evidence/1"
RESERVOIR = 2000  # values kept per route, path and kind: enough for the tests' power, small
KINDS = ("turn_latency", "time_to_first_prompt")
PATHS = ("legacy", "voicegateway")
Counts = dict[str, float]  # "<metric>|<label>|<label>..." -> value


@dataclass
class Window:
    """One route's evidence since a step began: counts by key, and each path's values."""

    counts: Counts = field(default_factory=dict)
    # (kind, path) -> values and how many were seen (the reservoir holds at most RESERVOIR)
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    seen: dict[tuple[str, str], int] = field(default_factory=dict)

    def count(self, *key: str) -> float:
        return self.counts.get("|".join(key), 0.0)

    def total(self, metric: str, *prefix: str) -> float:
        """The sum of `metric`'s counts whose first labels are `prefix`."""
        start = "|".join((metric, *prefix)) + "|"
        return sum(v for k, v in self.counts.items() if k.startswith(start) or k == start[:-1])

    def values(self, kind: str, path: str) -> list[float]:
        return self.samples.get((kind, path), [])

    def nodes(self) -> dict[str, dict[str, float]]:
        """Shadow comparisons per node: `{node: {result: count}}`."""
        out: dict[str, dict[str, float]] = {}
        for key, value in self.counts.items():
            metric, _, rest = key.partition("|")
            if metric == "comparisons":
                node, _, result = rest.rpartition("|")
                out.setdefault(node, {})[result] = value
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "counts": self.counts,
            "samples": [
                [k, p, self.seen.get((k, p), len(v)), v] for (k, p), v in self.samples.items()
            ],
        }

    @classmethod
    def from_json(cls, doc: object) -> Window:
        """The window of a `to_json` document; ValueError for anything else."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} document")
        counts = doc.get("counts")
        rows = doc.get("samples")
        if not isinstance(counts, dict) or not isinstance(rows, list):
            raise ValueError("counts must be an object and samples a list")
        window = cls()
        for key, value in counts.items():
            if not _finite(value) or value < 0:
                raise ValueError(f"count {key!r} is not a number")
            window.counts[str(key)] = float(value)
        for row in rows:
            if not (
                isinstance(row, list)
                and len(row) == 4
                and row[0] in KINDS
                and row[1] in PATHS
                and isinstance(row[3], list)
                and isinstance(row[2], int)
                and not isinstance(row[2], bool)
                and row[2] >= len(row[3])
                and all(_finite(v) for v in row[3])
            ):
                raise ValueError(f"not a samples row: {row!r}")
            window.samples[(row[0], row[1])] = [float(v) for v in row[3]]
            window.seen[(row[0], row[1])] = row[2]
        return window


def _finite(value: object) -> TypeGuard[int | float]:
    """A JSON number the gates can use: not a bool, NaN or infinite (mann_whitney_u refuses
    NaN; one such value from an instance would stop the fleet's verdict)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond a float's range
        return False


def sum_windows(windows: Iterable[Window], *, rng: random.Random | None = None) -> Window:
    """Several instances' windows as one: counts added; values pooled, each instance's share of
    the pooled reservoir in proportion to the values it saw."""
    pick = rng or random.Random(0)
    out = Window()
    pools: dict[tuple[str, str], list[tuple[int, list[float]]]] = {}
    for window in windows:
        for key, value in window.counts.items():
            out.counts[key] = out.counts.get(key, 0.0) + value
        for sample_key, values in window.samples.items():
            seen = window.seen.get(sample_key, len(values))
            pools.setdefault(sample_key, []).append((seen, values))
    for sample_key, parts in pools.items():
        seen_total = sum(seen for seen, _ in parts)
        pooled: list[float] = []
        for seen, values in parts:
            share = round(RESERVOIR * seen / seen_total) if seen_total > RESERVOIR else len(values)
            pooled.extend(values if share >= len(values) else pick.sample(values, share))
        out.samples[sample_key] = pooled
        out.seen[sample_key] = seen_total
    return out


# metric attribute on Metrics -> (short name, labels kept, label filters)
_COUNTERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("routing_decisions", "decisions", ("path", "reason")),
    ("call_outcomes", "outcomes", ("path", "outcome")),
    ("turn_duration", "turns", ("path", "role")),
    ("vg_ack_timeouts", "ack_timeouts", ()),
    ("upstream_errors", "upstream_errors", ("path", "kind")),
    ("shadow_comparisons", "comparisons", ("node", "result")),
)


def _read(metric: MetricWrapperBase, name: str, labels: tuple[str, ...], route: str) -> Counts:
    out: Counts = {}
    suffix = "_count" if name == "turns" else "_total"
    for family in metric.collect():
        for sample in family.samples:
            if not sample.name.endswith(suffix) or sample.labels.get("route") != route:
                continue
            key = "|".join((name, *(sample.labels[label] for label in labels)))
            out[key] = out.get(key, 0.0) + sample.value
    return out


class Evidence:
    """The windows of the routes that have a plan, for one metrics registry (module doc)."""

    def __init__(self, metrics: Any, *, rng: random.Random | None = None) -> None:
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._base: dict[str, Counts] = {}
        self._samples: dict[str, Window] = {}
        self.watched: frozenset[str] = frozenset()

    def watch(self, routes: Iterable[str]) -> None:
        """Keep values for these routes only (those with a plan); others are forgotten."""
        self.watched = frozenset(routes)
        for route in list(self._samples):
            if route not in self.watched:
                del self._samples[route]
                self._base.pop(route, None)

    def open(self, route: str) -> None:
        """Start the route's window now: counts from here on, no values yet."""
        self._base[route] = self._counts(route)
        self._samples[route] = Window()

    def observe(self, route: str, kind: str, path: str, value: float) -> None:
        """One primary value (`turn_latency`, `time_to_first_prompt`, seconds) of a path."""
        window = self._samples.get(route)
        if window is None:
            return
        key = (kind, path)
        seen = window.seen.get(key, 0) + 1
        window.seen[key] = seen
        values = window.samples.setdefault(key, [])
        if len(values) < RESERVOIR:
            values.append(value)
        else:
            slot = self._rng.randrange(seen)
            if slot < RESERVOIR:
                values[slot] = value

    def window(self, route: str) -> Window:
        """What the route showed since `open` (since the start when it was never opened)."""
        base = self._base.get(route, {})
        counts = {k: v - base.get(k, 0.0) for k, v in self._counts(route).items()}
        counts = {k: v for k, v in counts.items() if v > 0}
        held = self._samples.get(route, Window())
        return Window(
            counts,
            {k: list(v) for k, v in held.samples.items()},
            dict(held.seen),
        )

    def _counts(self, route: str) -> Counts:
        out: Counts = {}
        for attribute, name, labels in _COUNTERS:
            out.update(_read(getattr(self._metrics, attribute), name, labels, route))
        return out


def rate(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0
