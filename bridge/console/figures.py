"""The counts the console shows, as plain data: read from a metrics registry, carried between
instances as JSON, summed over a fleet.

Pure: reading the in-memory registry does no I/O. A `Figures` holds what one instance counted
since it started (calls started, routing decisions, shadow comparisons, turn latency, the voice
KPIs of bridge/kpi.py) and its calls active now; a fleet's figures are the sum of its instances'.
`Figures.from_json` refuses (ValueError) any document `to_json` would not write, so one written
by another version of the bridge is left out of a sum rather than corrupting it — with one
allowance: the voice-KPI keys (`outcomes`, `first_prompt`, `call_turns`, `call_duration`,
`no_inputs`) came later within `acvg-figures/1`, so a document without them (from an instance
of the earlier version, during an upgrade) reads as having counted none; present, they must be
well-formed. An instance of the earlier version ignores them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from bridge.metrics import Metrics

__all__ = ["FORMAT", "Figures", "Labels", "PathKey", "Turns", "read_figures", "sum_figures"]

FORMAT = "acvg-figures/1"
Labels = tuple[str, str, str]
PathKey = tuple[str, str]  # (route, path)


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
    """A cumulative histogram (turn latency, or one of the voice KPIs): count,
    `(upper bound, cumulative count)` rows and the sum of what was observed (kept for the KPIs'
    means; 0 for turn latency, whose quantiles only are shown)."""

    count: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()
    sum: float = 0.0

    def minus(self, earlier: Turns) -> Turns:
        """What was observed since `earlier`; everything, when the count went backwards."""
        if self.count < earlier.count:
            return self
        before = dict(earlier.buckets)
        rows = tuple((le, max(0.0, n - before.get(le, 0.0))) for le, n in self.buckets)
        return Turns(self.count - earlier.count, rows, self.sum - earlier.sum)

    def plus(self, other: Turns) -> Turns:
        """Both histograms in one; rows stay cumulative even if their bounds differ."""
        bounds = sorted({le for le, _ in self.buckets} | {le for le, _ in other.buckets})
        rows = tuple(
            (le, _cumulative(self.buckets, le) + _cumulative(other.buckets, le)) for le in bounds
        )
        return Turns(self.count + other.count, rows, self.sum + other.sum)


@dataclass(frozen=True)
class Figures:
    """One instance's (or a fleet's) console counts, keyed by their metric labels."""

    started: Mapping[Labels, float] = field(default_factory=dict)  # (route, path, role)
    active: Mapping[Labels, float] = field(default_factory=dict)  # (route, path, role)
    decisions: Mapping[Labels, float] = field(default_factory=dict)  # (route, path, reason)
    comparisons: Mapping[Labels, float] = field(default_factory=dict)  # (route, node, result)
    # (route, path): primary and shadow turns together, the time each path took to answer
    turns: Mapping[PathKey, Turns] = field(default_factory=dict)
    # the voice KPIs of primary calls (bridge/kpi.py), with their sums
    outcomes: Mapping[Labels, float] = field(default_factory=dict)  # (route, path, outcome)
    first_prompt: Mapping[PathKey, Turns] = field(default_factory=dict)  # seconds
    call_turns: Mapping[PathKey, Turns] = field(default_factory=dict)  # caller turns per call
    call_duration: Mapping[PathKey, Turns] = field(default_factory=dict)  # seconds
    no_inputs: Mapping[PathKey, float] = field(default_factory=dict)  # noUserInput events

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
            # the earlier version's row shape (no sum): it refuses any other
            "turns": [
                [route, path, t.count, _bucket_rows(t)] for (route, path), t in self.turns.items()
            ],
            "outcomes": _rows(self.outcomes),
            "first_prompt": _histogram_rows(self.first_prompt),
            "call_turns": _histogram_rows(self.call_turns),
            "call_duration": _histogram_rows(self.call_duration),
            "no_inputs": [[route, path, n] for (route, path), n in self.no_inputs.items()],
        }

    @classmethod
    def from_json(cls, doc: object) -> Figures:
        """The figures of a `to_json` document; ValueError for anything else. A missing
        voice-KPI key reads as empty (see the module doc)."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} document")
        return cls(
            _counts(doc.get("started")),
            _counts(doc.get("active")),
            _counts(doc.get("decisions")),
            _counts(doc.get("comparisons")),
            _turns(doc.get("turns")),
            _counts(doc.get("outcomes", [])),
            _histograms(doc.get("first_prompt", [])),
            _histograms(doc.get("call_turns", [])),
            _histograms(doc.get("call_duration", [])),
            _path_counts(doc.get("no_inputs", [])),
        )


def _rows(counts: Mapping[Labels, float]) -> list[list[Any]]:
    return [[*labels, value] for labels, value in counts.items()]


def _bucket_rows(histogram: Turns) -> list[list[Any]]:
    return [[_bound_text(le), n] for le, n in histogram.buckets]


def _histogram_rows(histograms: Mapping[PathKey, Turns]) -> list[list[Any]]:
    return [
        [route, path, h.count, h.sum, _bucket_rows(h)] for (route, path), h in histograms.items()
    ]


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


def _path_counts(rows: object) -> dict[PathKey, float]:
    if not isinstance(rows, list):
        raise ValueError("counts must be a list of rows")
    out: dict[PathKey, float] = {}
    for row in rows:
        if not (
            isinstance(row, list) and len(row) == 3 and all(isinstance(p, str) for p in row[:2])
        ):
            raise ValueError(f"not a row of two labels and a count: {row!r}")
        out[(row[0], row[1])] = _number(row[2])
    return out


def _buckets(rows: object) -> tuple[tuple[float, float], ...]:
    if not isinstance(rows, list):
        raise ValueError(f"not a list of buckets: {rows!r}")
    buckets: list[tuple[float, float]] = []
    for bucket in rows:
        if not (isinstance(bucket, list) and len(bucket) == 2 and isinstance(bucket[0], str)):
            raise ValueError(f"not a bucket: {bucket!r}")
        buckets.append((float(bucket[0]), _number(bucket[1])))
    return tuple(sorted(buckets))


def _turns(rows: object) -> dict[PathKey, Turns]:
    """Turn-latency rows: route, path, count, buckets."""
    if not isinstance(rows, list):
        raise ValueError("turns must be a list of rows")
    out: dict[PathKey, Turns] = {}
    for row in rows:
        if not (
            isinstance(row, list)
            and len(row) == 4
            and isinstance(row[0], str)
            and isinstance(row[1], str)
        ):
            raise ValueError(f"not a histogram row: {row!r}")
        out[(row[0], row[1])] = Turns(_number(row[2]), _buckets(row[3]))
    return out


def _histograms(rows: object) -> dict[PathKey, Turns]:
    """Voice-KPI histogram rows: route, path, count, sum, buckets."""
    if not isinstance(rows, list):
        raise ValueError("histograms must be a list of rows")
    out: dict[PathKey, Turns] = {}
    for row in rows:
        if not (
            isinstance(row, list)
            and len(row) == 5
            and isinstance(row[0], str)
            and isinstance(row[1], str)
        ):
            raise ValueError(f"not a histogram row: {row!r}")
        out[(row[0], row[1])] = Turns(_number(row[2]), _buckets(row[4]), _number(row[3]))
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


def _sum_by_path(metric: MetricWrapperBase) -> dict[PathKey, float]:
    out: dict[PathKey, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["route"], sample.labels["path"])
                out[key] = out.get(key, 0.0) + sample.value
    return out


def _read_histograms(metric: MetricWrapperBase, *, sums: bool) -> dict[PathKey, Turns]:
    """A histogram's children per (route, path), other labels (a role) summed; without `sums`
    the sum stays 0 (turn latency: its JSON rows carry none, see `to_json`)."""
    counts: dict[PathKey, float] = {}
    totals: dict[PathKey, float] = {}
    buckets: dict[PathKey, dict[float, float]] = {}
    for family in metric.collect():
        for sample in family.samples:
            key = (sample.labels["route"], sample.labels["path"])
            if sample.name.endswith("_count"):
                counts[key] = counts.get(key, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                totals[key] = totals.get(key, 0.0) + sample.value
            elif sample.name.endswith("_bucket"):
                per = buckets.setdefault(key, {})
                le = float(sample.labels["le"])
                per[le] = per.get(le, 0.0) + sample.value
    return {
        key: Turns(
            count,
            tuple(sorted(buckets.get(key, {}).items())),
            totals.get(key, 0.0) if sums else 0.0,
        )
        for key, count in counts.items()
    }


def read_figures(metrics: Metrics) -> Figures:
    """The figures of a metrics registry now."""
    return Figures(
        started=_sum_by(metrics.calls_started, "_total", "route", "path", "role"),
        active=_sum_by(metrics.calls_active, "", "route", "path", "role"),
        decisions=_sum_by(metrics.routing_decisions, "_total", "route", "path", "reason"),
        comparisons=_sum_by(metrics.shadow_comparisons, "_total", "route", "node", "result"),
        turns=_read_histograms(metrics.turn_duration, sums=False),
        outcomes=_sum_by(metrics.call_outcomes, "_total", "route", "path", "outcome"),
        first_prompt=_read_histograms(metrics.time_to_first_prompt, sums=True),
        call_turns=_read_histograms(metrics.call_turns, sums=True),
        call_duration=_read_histograms(metrics.call_duration, sums=True),
        no_inputs=_sum_by_path(metrics.no_input_events),
    )


def _add(into: dict[Labels, float], counts: Mapping[Labels, float]) -> None:
    for labels, value in counts.items():
        into[labels] = into.get(labels, 0.0) + value


def _add_path(into: dict[PathKey, float], counts: Mapping[PathKey, float]) -> None:
    for key, value in counts.items():
        into[key] = into.get(key, 0.0) + value


def _add_histograms(into: dict[PathKey, Turns], histograms: Mapping[PathKey, Turns]) -> None:
    for key, histogram in histograms.items():
        into[key] = into.get(key, Turns()).plus(histogram)


def sum_figures(many: Iterable[Figures]) -> Figures:
    """The figures of several instances as one."""
    started: dict[Labels, float] = {}
    active: dict[Labels, float] = {}
    decisions: dict[Labels, float] = {}
    comparisons: dict[Labels, float] = {}
    turns: dict[PathKey, Turns] = {}
    outcomes: dict[Labels, float] = {}
    first_prompt: dict[PathKey, Turns] = {}
    call_turns: dict[PathKey, Turns] = {}
    call_duration: dict[PathKey, Turns] = {}
    no_inputs: dict[PathKey, float] = {}
    for figures in many:
        _add(started, figures.started)
        _add(active, figures.active)
        _add(decisions, figures.decisions)
        _add(comparisons, figures.comparisons)
        _add_histograms(turns, figures.turns)
        _add(outcomes, figures.outcomes)
        _add_histograms(first_prompt, figures.first_prompt)
        _add_histograms(call_turns, figures.call_turns)
        _add_histograms(call_duration, figures.call_duration)
        _add_path(no_inputs, figures.no_inputs)
    return Figures(
        started,
        active,
        decisions,
        comparisons,
        turns,
        outcomes,
        first_prompt,
        call_turns,
        call_duration,
        no_inputs,
    )
