"""The counts the console shows, as plain data: read from a metrics registry, carried between
instances as JSON, summed over a fleet.

Pure: reading the in-memory registry does no I/O. A `Figures` holds what one instance counted
since it started (calls started, routing decisions, shadow comparisons, turn latency) and its
calls active now; a fleet's figures are the sum of its instances'. `Figures.from_json` refuses
(ValueError) any document `to_json` would not write, so one written by another version of the
bridge is left out of a sum rather than corrupting it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from bridge.metrics import Metrics

__all__ = ["FORMAT", "Figures", "Labels", "Turns", "read_figures", "sum_figures"]

FORMAT = "acvg-figures/1"
Labels = tuple[str, str, str]


def _cumulative(rows: tuple[tuple[float, float], ...], bound: float) -> float:
    """The cumulative count of histogram rows at `bound` (that of the largest bound not above)."""
    below = 0.0
    for le, count in rows:
        if le > bound:
            break
        below = count
    return below


@dataclass(frozen=True)
class Turns:
    """A cumulative turn-latency histogram: count and `(upper bound, cumulative count)` rows."""

    count: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()

    def minus(self, earlier: Turns) -> Turns:
        """What was observed since `earlier`; everything, when the count went backwards."""
        if self.count < earlier.count:
            return self
        before = dict(earlier.buckets)
        rows = tuple((le, max(0.0, n - before.get(le, 0.0))) for le, n in self.buckets)
        return Turns(self.count - earlier.count, rows)

    def plus(self, other: Turns) -> Turns:
        """Both histograms in one; rows stay cumulative even if their bounds differ."""
        bounds = sorted({le for le, _ in self.buckets} | {le for le, _ in other.buckets})
        rows = tuple(
            (le, _cumulative(self.buckets, le) + _cumulative(other.buckets, le)) for le in bounds
        )
        return Turns(self.count + other.count, rows)


@dataclass(frozen=True)
class Figures:
    """One instance's (or a fleet's) console counts, keyed by their metric labels."""

    started: Mapping[Labels, float] = field(default_factory=dict)  # (route, path, role)
    active: Mapping[Labels, float] = field(default_factory=dict)  # (route, path, role)
    decisions: Mapping[Labels, float] = field(default_factory=dict)  # (route, path, reason)
    comparisons: Mapping[Labels, float] = field(default_factory=dict)  # (route, node, result)
    # (route, path): primary and shadow turns together, the time each path took to answer
    turns: Mapping[tuple[str, str], Turns] = field(default_factory=dict)

    def calls_started(self) -> int:
        """Primary calls started, every route and path."""
        return round(sum(v for (_, _, role), v in self.started.items() if role == "primary"))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "started": _rows(self.started),
            "active": _rows(self.active),
            "decisions": _rows(self.decisions),
            "comparisons": _rows(self.comparisons),
            "turns": [
                [route, path, t.count, [[_bound_text(le), n] for le, n in t.buckets]]
                for (route, path), t in self.turns.items()
            ],
        }

    @classmethod
    def from_json(cls, doc: object) -> Figures:
        """The figures of a `to_json` document; ValueError for anything else."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} document")
        return cls(
            _counts(doc.get("started")),
            _counts(doc.get("active")),
            _counts(doc.get("decisions")),
            _counts(doc.get("comparisons")),
            _turns(doc.get("turns")),
        )


def _rows(counts: Mapping[Labels, float]) -> list[list[Any]]:
    return [[*labels, value] for labels, value in counts.items()]


def _bound_text(le: float) -> str:
    # JSON has no infinity; Prometheus' own spelling of the last bound
    return "+Inf" if math.isinf(le) else repr(le)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def _counts(rows: object) -> dict[Labels, float]:
    if not isinstance(rows, list):
        raise ValueError("counts must be a list of rows")
    out: dict[Labels, float] = {}
    for row in rows:
        if not (
            isinstance(row, list) and len(row) == 4 and all(isinstance(p, str) for p in row[:3])
        ):
            raise ValueError(f"not a row of three labels and a count: {row!r}")
        out[(row[0], row[1], row[2])] = _number(row[3])
    return out


def _turns(rows: object) -> dict[tuple[str, str], Turns]:
    if not isinstance(rows, list):
        raise ValueError("turns must be a list of rows")
    out: dict[tuple[str, str], Turns] = {}
    for row in rows:
        if not (
            isinstance(row, list)
            and len(row) == 4
            and isinstance(row[0], str)
            and isinstance(row[1], str)
            and isinstance(row[3], list)
        ):
            raise ValueError(f"not a histogram row: {row!r}")
        buckets: list[tuple[float, float]] = []
        for bucket in row[3]:
            if not (isinstance(bucket, list) and len(bucket) == 2 and isinstance(bucket[0], str)):
                raise ValueError(f"not a bucket: {bucket!r}")
            buckets.append((float(bucket[0]), _number(bucket[1])))
        out[(row[0], row[1])] = Turns(_number(row[2]), tuple(sorted(buckets)))
    return out


def _sum_by(metric: MetricWrapperBase, suffix: str, *labels: str) -> dict[Labels, float]:
    first, second, third = labels
    out: dict[Labels, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if suffix and not sample.name.endswith(suffix):
                continue
            key = (sample.labels[first], sample.labels[second], sample.labels[third])
            out[key] = out.get(key, 0.0) + sample.value
    return out


def _read_turns(metrics: Metrics) -> dict[tuple[str, str], Turns]:
    counts: dict[tuple[str, str], float] = {}
    buckets: dict[tuple[str, str], dict[float, float]] = {}
    for family in metrics.turn_duration.collect():
        for sample in family.samples:
            key = (sample.labels["route"], sample.labels["path"])
            if sample.name.endswith("_count"):
                counts[key] = counts.get(key, 0.0) + sample.value
            elif sample.name.endswith("_bucket"):
                per = buckets.setdefault(key, {})
                le = float(sample.labels["le"])
                per[le] = per.get(le, 0.0) + sample.value
    return {
        key: Turns(count, tuple(sorted(buckets.get(key, {}).items())))
        for key, count in counts.items()
    }


def read_figures(metrics: Metrics) -> Figures:
    """The figures of a metrics registry now."""
    return Figures(
        started=_sum_by(metrics.calls_started, "_total", "route", "path", "role"),
        active=_sum_by(metrics.calls_active, "", "route", "path", "role"),
        decisions=_sum_by(metrics.routing_decisions, "_total", "route", "path", "reason"),
        comparisons=_sum_by(metrics.shadow_comparisons, "_total", "route", "node", "result"),
        turns=_read_turns(metrics),
    )


def _add(into: dict[Labels, float], counts: Mapping[Labels, float]) -> None:
    for labels, value in counts.items():
        into[labels] = into.get(labels, 0.0) + value


def sum_figures(many: Iterable[Figures]) -> Figures:
    """The figures of several instances as one."""
    started: dict[Labels, float] = {}
    active: dict[Labels, float] = {}
    decisions: dict[Labels, float] = {}
    comparisons: dict[Labels, float] = {}
    turns: dict[tuple[str, str], Turns] = {}
    for figures in many:
        _add(started, figures.started)
        _add(active, figures.active)
        _add(decisions, figures.decisions)
        _add(comparisons, figures.comparisons)
        for key, histogram in figures.turns.items():
            turns[key] = turns.get(key, Turns()).plus(histogram)
    return Figures(started, active, decisions, comparisons, turns)
