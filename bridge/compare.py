"""Compare the two paths' AudioCodes activities of one turn, activity by activity (design §3.7).

The Diffy model: each activity is lifted to flat `path → value` fields (dotted names, `[n]` for
list elements), `id` and `timestamp` and the node's noise paths (mapping file `compare.noise`,
`[*]` matches any index) are dropped, the node's normalisers (`compare.normalize`) are applied to
both sides, and what is left is compared field by field.

Point of view: the primary is the reference. `missing` means the shadow lacks an activity (or a
field) the primary produced; `extra` means the shadow produced one the primary did not.

Activities are aligned in order on their kind (type and case-folded event name), maximising first
the number of aligned pairs, then the number of exact matches, so one extra activity in the middle
does not shift everything after it. An aligned pair takes the node (label and hints) of its
primary activity; transfer_dial and transfer_refer share a kind, so a dial/refer disagreement is a
field mismatch rather than a missing plus an extra. Pure: no I/O, never raises on any input.
"""

from __future__ import annotations

import contextlib
import math
import re
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

from bridge.mapping import UNMAPPED_NODE, MappingSet
from bridge.metrics import Metrics
from bridge.numbers import redact

__all__ = [
    "ALWAYS_IGNORED",
    "ActivityComparison",
    "ComparisonResult",
    "DiffKind",
    "FieldDiff",
    "TurnComparison",
    "compare_turn",
    "field_label",
    "lift",
    "record_metrics",
]

ALWAYS_IGNORED = ("id", "timestamp")
ROOT_PATH = "$"  # the path of a value that is not an object or list (a malformed activity)

# Above this many candidate pairs the alignment falls back to pairing by position (cost bound).
_MAX_ALIGN_CELLS = 40_000
# Field labels of acvg_shadow_field_mismatches_total keep at most this many dotted segments.
_MAX_LABEL_SEGMENTS = 4
_MAX_LABEL_CHARS = 120


class ComparisonResult(StrEnum):
    MATCH = "match"
    MISMATCH = "mismatch"
    MISSING = "missing"
    EXTRA = "extra"


class DiffKind(StrEnum):
    """How one field differs (primary is the reference)."""

    VALUE = "value"
    TYPE = "type"
    MISSING = "missing"  # the shadow lacks the field
    EXTRA = "extra"  # only the shadow has the field


@dataclass(frozen=True, slots=True)
class FieldDiff:
    path: str
    kind: DiffKind


@dataclass(frozen=True, slots=True)
class ActivityComparison:
    """One aligned pair (`match`/`mismatch`) or one unpaired activity (`missing`/`extra`).

    `fields` are the differing field paths of a mismatch (empty otherwise); `diffs` says how each
    differs. `primary`/`shadow` are the activities as given (None on the side that has none).
    """

    node: str
    result: ComparisonResult
    fields: tuple[str, ...]
    primary: dict[str, Any] | None
    shadow: dict[str, Any] | None
    diffs: tuple[FieldDiff, ...] = ()


@dataclass(frozen=True, slots=True)
class TurnComparison:
    """Every activity of one turn, in aligned order.

    `order_matches` is False when activities of a kind both paths produced cannot all be aligned
    in order (reordering); a plain extra or missing activity does not affect it.
    """

    items: tuple[ActivityComparison, ...]
    order_matches: bool
    primary_path: str
    primary_latency_s: float | None = None
    shadow_latency_s: float | None = None

    @property
    def diverged(self) -> bool:
        """Any item is not a match (a reordering always shows as missing/extra items too)."""
        return not self.order_matches or any(
            i.result is not ComparisonResult.MATCH for i in self.items
        )

    def count(self, result: ComparisonResult) -> int:
        return sum(1 for i in self.items if i.result is result)


def lift(value: Any) -> dict[str, Any]:
    """Flatten nested objects and lists into `path → leaf` (an empty object or list is a leaf).

    `{"a": {"b": [1, {"c": 2}]}}` → `{"a.b[0]": 1, "a.b[1].c": 2}`. A non-container value is
    lifted to `{"$": value}`. Iterative, so depth is unbounded.
    """
    out: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, current = stack.pop()
        children: list[tuple[str, Any]]
        if isinstance(current, Mapping) and current:
            children = [(f"{path}.{_key(k)}" if path else _key(k), v) for k, v in current.items()]
        elif isinstance(current, list | tuple) and current:
            children = [(f"{path}[{i}]", v) for i, v in enumerate(current)]
        else:
            out[path or ROOT_PATH] = current
            continue
        stack.extend(reversed(children))
    return out


def _key(key: object) -> str:
    return key if isinstance(key, str) else str(key)


def field_label(path: str) -> str:
    """A bounded metric label for a field path: indices → `[*]`, digit runs redacted, at most
    four dotted segments (deeper paths end in `.*`). Never a value."""
    label = redact(_INDEX.sub("[*]", path))
    segments = label.split(".")
    if len(segments) > _MAX_LABEL_SEGMENTS:
        label = ".".join([*segments[:_MAX_LABEL_SEGMENTS], "*"])
    return label[:_MAX_LABEL_CHARS]


_INDEX = re.compile(r"\[\d+\]")


# --- hints ------------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _path_pattern(path: str, prefix: bool) -> re.Pattern[str]:
    body = re.escape(path).replace(r"\[\*\]", r"\[\d+\]")
    # A noise path also covers everything below it (`a` drops `a.b` and `a[0]`).
    return re.compile(body + (r"(?:[.\[].*)?" if prefix else ""), re.DOTALL)


class _Hints:
    """A node's noise paths and normalisers, with what they decide for each concrete path
    remembered: the same few paths come back on every turn."""

    __slots__ = ("_plans", "noise", "normalizers")

    def __init__(
        self,
        noise: tuple[re.Pattern[str], ...],
        normalizers: tuple[tuple[re.Pattern[str], Callable[[Any], Any]], ...],
    ) -> None:
        self.noise = noise
        self.normalizers = normalizers
        # path -> None (noise) or the normalisers that apply to it
        self._plans: dict[str, tuple[Callable[[Any], Any], ...] | None] = {}

    def plan(self, path: str) -> tuple[Callable[[Any], Any], ...] | None:
        plan = self._plans.get(path, _UNPLANNED)
        if plan is not _UNPLANNED:
            return plan  # type: ignore[return-value]
        if any(p.fullmatch(path) for p in self.noise):
            plan = None
        else:
            plan = tuple(fn for pattern, fn in self.normalizers if pattern.fullmatch(path))
        if len(self._plans) < _MAX_PLANNED_PATHS:  # paths are upstream data: bound the memory
            self._plans[path] = plan
        return plan


_UNPLANNED = object()
_MAX_PLANNED_PATHS = 4096
# Hints per mapping set and node, kept as long as the mapping set is (a reload makes a new one).
_HINTS: weakref.WeakKeyDictionary[MappingSet, dict[str, _Hints]] = weakref.WeakKeyDictionary()


def _hints(mappings: MappingSet, node: str) -> _Hints:
    cache = _HINTS.get(mappings)
    if cache is None:
        cache = _HINTS[mappings] = {}
    hints = cache.get(node)
    if hints is None:
        raw = mappings.compare_hints(node)
        noise = tuple(_path_pattern(p, True) for p in (*ALWAYS_IGNORED, *raw.noise))
        norms = tuple((_path_pattern(p, False), fn) for p, fn in raw.normalizers.items())
        hints = cache[node] = _Hints(noise, norms)
    return hints


def _apply_hints(lifted: Mapping[str, Any], hints: _Hints) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, raw in lifted.items():
        plan = hints.plan(path)
        if plan is None:
            continue
        value = raw
        for fn in plan:
            # A normaliser that cannot handle a value leaves it as it is.
            with contextlib.suppress(Exception):
                value = fn(value)
        if value is None and raw is not None:
            continue  # the normaliser said "no value" (e.g. drop_default)
        if isinstance(value, Mapping | list | tuple) and value:
            # A normaliser may parse text into structure (json_or_text): lift it in place.
            for sub, leaf in lift(value).items():
                out[path + (sub if sub.startswith("[") else "." + sub)] = leaf
            continue
        out[path] = value
    return out


# --- field comparison -------------------------------------------------------------------------


def _category(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _equal(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def _diff(primary: Mapping[str, Any], shadow: Mapping[str, Any]) -> tuple[FieldDiff, ...]:
    diffs: list[FieldDiff] = []
    for path, value in primary.items():
        if path not in shadow:
            diffs.append(FieldDiff(path, DiffKind.MISSING))
        elif _category(value) != _category(shadow[path]):
            diffs.append(FieldDiff(path, DiffKind.TYPE))
        elif not _equal(value, shadow[path]):
            diffs.append(FieldDiff(path, DiffKind.VALUE))
    diffs.extend(FieldDiff(path, DiffKind.EXTRA) for path in shadow if path not in primary)
    return tuple(diffs)


# --- turn comparison --------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (so `True` is not `1` and `1` is not `1.0`):
    then the field comparison cannot find a difference, whatever the node's hints do."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)  # NaN is not equal to itself here: the field comparison decides


def _same_activity(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    skip = ALWAYS_IGNORED
    a_keys = [k for k in a if k not in skip]
    if len(a_keys) != sum(1 for k in b if k not in skip):
        return False
    return all(k in b and _same(a[k], b[k]) for k in a_keys)


@dataclass(slots=True)
class _Activity:
    original: dict[str, Any]
    node: str
    kind: tuple[str, str]
    source: Any  # what is lifted, on demand
    _lifted: dict[str, Any] | None = None

    @property
    def lifted(self) -> dict[str, Any]:
        if self._lifted is None:
            self._lifted = lift(self.source)
        return self._lifted


def _prepare(activity: Any, mappings: MappingSet) -> _Activity:
    if not isinstance(activity, Mapping):
        return _Activity({ROOT_PATH: activity}, UNMAPPED_NODE, ("", ""), activity)
    original = activity if isinstance(activity, dict) else dict(activity)
    try:
        node = mappings.node_for_activity(activity)
    except Exception:
        node = UNMAPPED_NODE
    kind_raw, name_raw = activity.get("type"), activity.get("name")
    kind = _key(kind_raw) if kind_raw is not None else ""
    name = name_raw.casefold() if kind == "event" and isinstance(name_raw, str) else ""
    return _Activity(original, node, (kind, name), activity)


class _Turn:
    """Pairs of one turn, with each pair's field differences computed once."""

    def __init__(
        self, primary: list[_Activity], shadow: list[_Activity], mappings: MappingSet
    ) -> None:
        self.primary = primary
        self.shadow = shadow
        self.mappings = mappings
        self._diffs: dict[tuple[int, int], tuple[FieldDiff, ...]] = {}

    def diffs(self, i: int, j: int) -> tuple[FieldDiff, ...]:
        key = (i, j)
        found = self._diffs.get(key)
        if found is None and _same_activity(self.primary[i].original, self.shadow[j].original):
            found = self._diffs[key] = ()
        if found is None:
            hints = _hints(self.mappings, self.primary[i].node)
            p = _apply_hints(self.primary[i].lifted, hints)
            s = _apply_hints(self.shadow[j].lifted, hints)
            found = self._diffs[key] = _diff(p, s)
        return found

    def align(self) -> list[tuple[int | None, int | None]]:
        n, m = len(self.primary), len(self.shadow)
        if self._in_step():
            return [(k, k) for k in range(n)]
        if n * m > _MAX_ALIGN_CELLS:
            return self._align_by_position()
        # best[i][j]: best score for primary[i:] against shadow[j:]. A pair is worth more than all
        # exact-match bonuses together, so the number of pairs is maximised first.
        pair_weight = n + m + 1
        best = [[0] * (m + 1) for _ in range(n + 1)]
        for i in range(n - 1, -1, -1):
            for j in range(m - 1, -1, -1):
                score = max(best[i + 1][j], best[i][j + 1])
                if self.primary[i].kind == self.shadow[j].kind:
                    bonus = 0 if self.diffs(i, j) else 1
                    score = max(score, pair_weight + bonus + best[i + 1][j + 1])
                best[i][j] = score
        steps: list[tuple[int | None, int | None]] = []
        i = j = 0
        while i < n and j < m:
            if self.primary[i].kind == self.shadow[j].kind:
                bonus = 0 if self.diffs(i, j) else 1
                if best[i][j] == pair_weight + bonus + best[i + 1][j + 1]:
                    steps.append((i, j))
                    i, j = i + 1, j + 1
                    continue
            if best[i][j] == best[i + 1][j]:
                steps.append((i, None))
                i += 1
            else:
                steps.append((None, j))
                j += 1
        steps.extend((k, None) for k in range(i, n))
        steps.extend((None, k) for k in range(j, m))
        return steps

    def _in_step(self) -> bool:
        """Same kinds in the same order and every pair equal: pairing by position is then the
        best alignment (most pairs, all exact), the usual turn, found without the full table."""
        if len(self.primary) != len(self.shadow):
            return False
        if any(p.kind != s.kind for p, s in zip(self.primary, self.shadow, strict=True)):
            return False
        return not any(self.diffs(k, k) for k in range(len(self.primary)))

    def _align_by_position(self) -> list[tuple[int | None, int | None]]:
        steps: list[tuple[int | None, int | None]] = []
        for k in range(max(len(self.primary), len(self.shadow))):
            i = k if k < len(self.primary) else None
            j = k if k < len(self.shadow) else None
            if i is not None and j is not None and self.primary[i].kind != self.shadow[j].kind:
                steps.extend([(i, None), (None, j)])
            else:
                steps.append((i, j))
        return steps


def compare_turn(
    primary: Sequence[Any],
    shadow: Sequence[Any],
    mappings: MappingSet,
    *,
    primary_path: str,
    primary_latency_s: float | None = None,
    shadow_latency_s: float | None = None,
) -> TurnComparison:
    """Compare the primary's and the shadow's activities of one turn (see the module doc)."""
    turn = _Turn(
        [_prepare(a, mappings) for a in primary],
        [_prepare(a, mappings) for a in shadow],
        mappings,
    )
    items: list[ActivityComparison] = []
    for i, j in turn.align():
        if i is not None and j is not None:
            p, s = turn.primary[i], turn.shadow[j]
            diffs = turn.diffs(i, j)
            result = ComparisonResult.MISMATCH if diffs else ComparisonResult.MATCH
            fields = tuple(d.path for d in diffs)
            items.append(ActivityComparison(p.node, result, fields, p.original, s.original, diffs))
        elif i is not None:
            p = turn.primary[i]
            items.append(ActivityComparison(p.node, ComparisonResult.MISSING, (), p.original, None))
        elif j is not None:
            s = turn.shadow[j]
            items.append(ActivityComparison(s.node, ComparisonResult.EXTRA, (), None, s.original))
    return TurnComparison(
        items=tuple(items),
        order_matches=_order_matches(turn, items),
        primary_path=primary_path,
        primary_latency_s=primary_latency_s,
        shadow_latency_s=shadow_latency_s,
    )


def _order_matches(turn: _Turn, items: Iterable[ActivityComparison]) -> bool:
    """Every activity whose kind both sides produced got aligned (none was out of order)."""
    if len(turn.primary) == len(turn.shadow) and all(
        item.primary is not None and item.shadow is not None for item in items
    ):
        return True  # everything paired
    p_kinds = Counter(a.kind for a in turn.primary)
    s_kinds = Counter(a.kind for a in turn.shadow)
    common = sum((p_kinds & s_kinds).values())
    paired = sum(1 for item in items if item.primary is not None and item.shadow is not None)
    return paired == common


# Top-level fields of an AudioCodes activity; anything else is labelled `other`.
_ACTIVITY_FIELDS = frozenset(
    {"type", "name", "text", "value", "activityParams", "sessionParams", "parameters"}
)


def bounded_field(path: str, known: frozenset[str]) -> str:
    """The metric label of a mismatching field: a path the node's mapping file emits, or below
    one (`known.*`), or `<activity field>.*`, or `other` — a closed set whatever the upstreams
    send (keys of `value` objects or SIP headers never become label values)."""
    label = _INDEX.sub("[*]", path)
    if label in known:
        return label
    for emitted in known:
        if label.startswith((emitted + ".", emitted + "[")):
            return emitted + ".*"
    top = re.split(r"[.\[]", label, maxsplit=1)[0]
    if top not in _ACTIVITY_FIELDS:
        return "other"
    return top if top == label else f"{top}.*"


def record_metrics(
    comparison: TurnComparison, metrics: Metrics, route: str, mappings: MappingSet | None = None
) -> None:
    """Count each item in acvg_shadow_comparisons_total and each mismatching field (as a bounded
    label, once per activity) in acvg_shadow_field_mismatches_total."""
    for item in comparison.items:
        metrics.child(metrics.shadow_comparisons, route, item.node, item.result).inc()
        mapping = mappings.get(item.node) if mappings is not None else None
        if mapping is None:
            labels = (field_label(f) for f in item.fields)
        else:
            labels = (bounded_field(f, mapping.emitted_paths) for f in item.fields)
        for label in dict.fromkeys(labels):
            metrics.child(metrics.shadow_field_mismatches, route, item.node, label).inc()
