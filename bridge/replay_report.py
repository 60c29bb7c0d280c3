"""What a replay found, as data: the `acvg-replay-report/1` dict (written as report.json and
rendered by bridge/replay_html.py), the per-node table printed on the terminal, and the live
progress line.

The match rate is per turn: a turn matches when every activity of it matched in order. A call
that could not be played counts all its turns as not matched, so an upstream that dies lowers
the rate instead of hiding.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from bridge.compare import ComparisonResult, lift
from bridge.journal_reader import Problem
from bridge.replay import ReplayedCall

__all__ = ["VERSION", "Progress", "ReportMeta", "build_report", "node_table"]

VERSION = "acvg-replay-report/1"
_RESULTS = tuple(r.value for r in ComparisonResult)


@dataclass(frozen=True, slots=True)
class ReportMeta:
    journal: str
    route: str
    path: str
    speed: float
    concurrency: int
    fail_under: float
    started_at: datetime
    seconds: float
    skipped: int = 0  # calls of other routes


def _rate(good: int, total: int) -> float:
    return good / total if total else 1.0


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _latency(values: Sequence[float]) -> dict[str, Any]:
    return {
        "turns": len(values),
        "p50_ms": _ms(_percentile(values, 0.50)),
        "p95_ms": _ms(_percentile(values, 0.95)),
        "p99_ms": _ms(_percentile(values, 0.99)),
    }


def _diffs(item: Any) -> list[dict[str, Any]]:
    primary = lift(item.primary) if item.primary is not None else {}
    shadow = lift(item.shadow) if item.shadow is not None else {}
    return [
        {
            "path": d.path,
            "kind": d.kind.value,
            "recorded": primary.get(d.path),
            "replayed": shadow.get(d.path),
        }
        for d in item.diffs
    ]


def _call(result: ReplayedCall) -> dict[str, Any]:
    call = result.call
    status = "error" if result.error is not None else "diverged" if result.diverged else "match"
    turns = []
    for turn in result.turns:
        comparison = turn.comparison
        diverged = comparison is None or comparison.diverged
        activities = []
        if comparison is not None and diverged:
            activities = [
                {
                    "node": item.node,
                    "result": item.result.value,
                    "fields": list(item.fields),
                    "recorded": item.primary,
                    "replayed": item.shadow,
                    "diffs": _diffs(item),
                }
                for item in comparison.items
                if item.result is not ComparisonResult.MATCH
            ]
        turns.append(
            {
                "index": turn.index,
                "offset_ms": turn.offset_ms,
                "latency_ms": _ms(turn.latency_s),
                "diverged": diverged,
                "order_matches": comparison.order_matches if comparison is not None else True,
                "activities": activities,
            }
        )
    return {
        "line": result.line,
        "conversation": call.conversation,
        "recorded_path": call.path,
        "mode": call.mode,
        "transport": call.transport,
        "status": status,
        "error": result.error,
        "turns": turns,
    }


@dataclass
class _Node:
    counts: Counter[str] = field(default_factory=Counter)
    fields: Counter[str] = field(default_factory=Counter)


def _nodes(results: Iterable[ReplayedCall]) -> list[dict[str, Any]]:
    nodes: dict[str, _Node] = {}
    for result in results:
        for turn in result.turns:
            if turn.comparison is None:
                continue
            for item in turn.comparison.items:
                node = nodes.setdefault(item.node, _Node())
                node.counts[item.result.value] += 1
                node.fields.update(item.fields)
    rows = []
    for name in sorted(nodes):
        node = nodes[name]
        total = sum(node.counts.values())
        rows.append(
            {
                "node": name,
                "activities": total,
                **{r: node.counts[r] for r in _RESULTS},
                "match_rate": _rate(node.counts["match"], total),
                "fields": dict(node.fields.most_common()),
            }
        )
    return rows


def build_report(
    results: Sequence[ReplayedCall], problems: Sequence[Problem], meta: ReportMeta
) -> dict[str, Any]:
    """The `acvg-replay-report/1` dict of one replay (documented in docs/journal.md)."""
    turns = sum(len(r.call.turns) for r in results)
    matched = sum(r.matched_turns for r in results if r.error is None)
    rate = _rate(matched, turns)
    latencies = [
        t.latency_s for r in results if r.error is None for t in r.turns if t.latency_s is not None
    ]
    recorded: dict[str, list[float]] = {}
    for r in results:
        for turn in r.call.turns:
            if turn.latency_ms is not None:
                recorded.setdefault(r.call.path, []).append(turn.latency_ms / 1000)
    return {
        "version": VERSION,
        "journal": meta.journal,
        "route": meta.route,
        "path": meta.path,
        "started_at": meta.started_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(meta.seconds, 3),
        "speed": meta.speed,
        "concurrency": meta.concurrency,
        "summary": {
            "calls": len(results),
            "replayed": sum(1 for r in results if r.error is None),
            "errors": sum(1 for r in results if r.error is not None),
            "skipped": meta.skipped,
            "problems": len(problems),
            "turns": turns,
            "turns_matched": matched,
            "match_rate": rate,
            "fail_under": meta.fail_under,
            "passed": rate >= meta.fail_under,
        },
        "recorded_paths": dict(Counter(r.call.path for r in results)),
        "nodes": _nodes(results),
        "latency": {meta.path: _latency(latencies)},
        "recorded_latency": {path: _latency(values) for path, values in sorted(recorded.items())},
        "problems": [{"file": p.file, "line": p.line, "reason": p.reason} for p in problems],
        "calls": [_call(r) for r in results],
    }


def _pct(rate: float) -> str:
    # Rounded down, as on the report page: a run that did not fully match never shows 100.0 %.
    return f"{math.floor(round(rate * 1000, 6)) / 10:.1f} %"


def node_table(report: Mapping[str, Any]) -> list[str]:
    """The terminal's per-node table and the summary lines under it."""
    head = f"{'node':<22} {'acts':>6} {'match':>6} {'mism':>6} {'miss':>6} {'extra':>6}  rate"
    lines = [head, "-" * len(head)]
    for row in report["nodes"]:
        fields = ", ".join(list(row["fields"])[:3])
        lines.append(
            f"{row['node']:<22} {row['activities']:>6} {row['match']:>6} {row['mismatch']:>6} "
            f"{row['missing']:>6} {row['extra']:>6}  {_pct(row['match_rate']):>7}"
            + (f"  ({fields})" if fields else "")
        )
    summary = report["summary"]
    lines.append("")
    lines.append(
        f"{summary['calls']} calls replayed against {report['path']} in {report['seconds']:.1f} s: "
        f"{summary['turns_matched']}/{summary['turns']} turns match ({_pct(summary['match_rate'])})"
        f", {summary['errors']} errors, {summary['problems']} bad journal lines"
        + (f", {summary['skipped']} calls of other routes skipped" if summary["skipped"] else "")
    )
    for call in report["calls"]:
        if call["status"] == "error":
            lines.append(f"  error: line {call['line']}: {call['error']}")
    for problem in report["problems"]:
        where = f"{problem['file']}:{problem['line']}" if problem["line"] else problem["file"]
        lines.append(f"  bad line: {where}: {problem['reason']}")
    verdict = "PASS" if summary["passed"] else "FAIL"
    lines.append(
        f"{verdict}: match rate {_pct(summary['match_rate'])}, "
        f"--fail-under {_pct(summary['fail_under'])}"
    )
    return lines


class Progress:
    """A live progress line on a terminal (calls done / total, match rate so far, ETA);
    silent when `out` is not a terminal."""

    def __init__(self, total: int, out: TextIO = sys.stderr) -> None:
        self.total = total
        self.done = 0
        self._turns = 0
        self._matched = 0
        self._out = out
        self._live = out.isatty()
        self._t0 = time.monotonic()

    def __call__(self, result: ReplayedCall) -> None:
        self.done += 1
        self._turns += len(result.call.turns)
        self._matched += result.matched_turns if result.error is None else 0
        if self._live:
            self._out.write("\r" + self.line())
            self._out.flush()

    def line(self, width: int = 28) -> str:
        share = self.done / self.total if self.total else 1.0
        bar = "#" * round(share * width)
        elapsed = time.monotonic() - self._t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        rate = _pct(_rate(self._matched, self._turns))
        return f"[{bar:<{width}}] {self.done}/{self.total} calls  match {rate}  ETA {eta:4.0f} s"

    def close(self) -> None:
        if self._live:
            self._out.write("\n")
            self._out.flush()
