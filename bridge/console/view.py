"""What the console shows, as JSON-ready dicts: per route the split, the policy, readiness per
node and latency per path; the divergences, filtered and flattened.

Pure: reads the config, the in-memory metrics registry and divergence entries handed in; no I/O.
Never contains tokens or upstream URLs (the policy comes from `describe_routes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from prometheus_client.metrics import MetricWrapperBase

from bridge.config import Config, ConsoleSettings
from bridge.console.history import PATHS, histogram_quantile, read_metrics
from bridge.metrics import Metrics
from bridge.reload import describe_routes

__all__ = ["Verdict", "divergence_items", "route_views", "thresholds", "verdict"]

Verdict = Literal["ready", "needs review", "not enough data"]
RESULTS = ("match", "mismatch", "missing", "extra")
ALL_NODES = "(all nodes)"


def verdict(settings: ConsoleSettings, samples: float, match_rate: float | None) -> Verdict:
    """`not enough data` below `min_samples` comparisons, else `ready` at or above
    `ready_match_rate`, else `needs review`."""
    if samples < settings.min_samples or match_rate is None:
        return "not enough data"
    return "ready" if match_rate >= settings.ready_match_rate else "needs review"


def _level(settings: ConsoleSettings, verdict_: Verdict, match_rate: float | None) -> str:
    """How the page colours a row: `ok`, `warn` (needs review) or `bad` (below the review rate)."""
    if verdict_ == "ready":
        return "ok"
    if verdict_ == "not enough data" or match_rate is None:
        return "none"
    return "bad" if match_rate < settings.review_match_rate else "warn"


def thresholds(settings: ConsoleSettings) -> dict[str, Any]:
    return {
        "min_samples": settings.min_samples,
        "ready_match_rate": settings.ready_match_rate,
        "review_match_rate": settings.review_match_rate,
    }


def _sum_by(metric: MetricWrapperBase, suffix: str, *labels: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if suffix and not sample.name.endswith(suffix):
                continue
            key = tuple(sample.labels[label] for label in labels)
            out[key] = out.get(key, 0.0) + sample.value
    return out


def _readiness_row(
    settings: ConsoleSettings, node: str, counts: Mapping[str, float]
) -> dict[str, Any]:
    total = sum(counts.get(r, 0.0) for r in RESULTS)
    rate = counts.get("match", 0.0) / total if total else None
    result = verdict(settings, total, rate)
    return {
        "node": node,
        "samples": round(total),
        "match_rate": rate,
        **{r: round(counts.get(r, 0.0)) for r in RESULTS},
        "verdict": result,
        "level": _level(settings, result, rate),
    }


def route_views(config: Config, metrics: Metrics) -> list[dict[str, Any]]:
    """One view per configured route, in config order (see the module doc)."""
    policies = describe_routes(config)["routes"]
    started = _sum_by(metrics.calls_started, "_total", "route", "path", "role")
    active = _sum_by(metrics.calls_active, "", "route", "path", "role")
    decisions = _sum_by(metrics.routing_decisions, "_total", "route", "path", "reason")
    compared = _sum_by(metrics.shadow_comparisons, "_total", "route", "node", "result")
    turns = read_metrics(metrics).turns
    settings = config.console
    views = []
    for name in config.routes:
        split = {
            path: {
                "calls": round(started.get((name, path, "primary"), 0.0)),
                "active": round(active.get((name, path, "primary"), 0.0)),
                "shadow_calls": round(started.get((name, path, "shadow"), 0.0)),
                "shadow_active": round(active.get((name, path, "shadow"), 0.0)),
                "reasons": {
                    reason: round(value)
                    for (route, p, reason), value in sorted(decisions.items())
                    if route == name and p == path and value
                },
            }
            for path in PATHS
        }
        fallbacks = sum(
            v for (r, _, reason), v in decisions.items() if r == name and reason == "fallback"
        )
        per_node: dict[str, dict[str, float]] = {}
        for (route, node, result), value in compared.items():
            if route == name:
                per_node.setdefault(node, {})[result] = value
        overall: dict[str, float] = {}
        for counts in per_node.values():
            for result, value in counts.items():
                overall[result] = overall.get(result, 0.0) + value
        rows = [_readiness_row(settings, node, per_node[node]) for node in sorted(per_node)]
        latency: dict[str, dict[str, Any]] = {}
        for path in PATHS:
            histogram = turns.get((name, path))
            if histogram is None or histogram.count <= 0:
                latency[path] = {"turns": 0, "p50_s": None, "p95_s": None}
                continue
            latency[path] = {
                "turns": round(histogram.count),
                "p50_s": histogram_quantile(histogram.buckets, 0.5),
                "p95_s": histogram_quantile(histogram.buckets, 0.95),
            }
        views.append(
            {
                "name": name,
                **policies[name],
                "split": split,
                "fallbacks": round(fallbacks),
                "readiness": {"total": _readiness_row(settings, ALL_NODES, overall), "nodes": rows},
                "latency": latency,
            }
        )
    return views


def divergence_items(
    entries: Iterable[Mapping[str, Any]],
    *,
    route: str | None = None,
    node: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The non-matching items of divergence-log entries (newest first, as given), one per item,
    with the turn's context; filtered by route and node, at most `limit`."""
    out: list[dict[str, Any]] = []
    for entry in entries:
        if route and entry.get("route") != route:
            continue
        for index, item in enumerate(entry.get("items") or []):
            if item.get("result") == "match" or (node and item.get("node") != node):
                continue
            out.append(
                {
                    "id": f"{entry.get('conversation_id')}/{entry.get('turn')}/{index}",
                    "time": entry.get("time"),
                    "route": entry.get("route"),
                    "turn": entry.get("turn"),
                    "primary_path": entry.get("primary_path"),
                    "shadow_path": _other(entry.get("primary_path")),
                    "order_matches": entry.get("order_matches"),
                    "node": item.get("node"),
                    "result": item.get("result"),
                    "fields": item.get("fields") or [],
                    "field_kinds": item.get("field_kinds") or {},
                    "primary": item.get("primary"),
                    "shadow": item.get("shadow"),
                }
            )
            if len(out) >= limit:
                return out
    return out


def _other(path: object) -> str | None:
    return {"legacy": "voicegateway", "voicegateway": "legacy"}.get(str(path))
