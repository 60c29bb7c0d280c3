"""What the console shows, as JSON-ready dicts: per route the split, the policy, readiness per
node, latency and voice KPIs per path; the divergences, filtered and flattened; the fleet's
instances.

Pure: reads the config, the figures (one instance's or a fleet's, bridge/console/figures.py) and
divergence entries handed in; no I/O. Never contains tokens or upstream URLs (the policy comes
from `describe_routes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from bridge.config import Config, ConsoleSettings
from bridge.console.figures import Figures, Turns, sum_figures
from bridge.console.history import PATHS, histogram_quantile
from bridge.kpi import Outcome
from bridge.reload import describe_routes

__all__ = [
    "Verdict",
    "divergence_items",
    "fleet_view",
    "kpi_view",
    "merged_entries",
    "route_views",
    "thresholds",
    "verdict",
]

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


def _mean(histogram: Turns | None) -> float | None:
    if histogram is None or histogram.count <= 0:
        return None
    return histogram.sum / histogram.count


def kpi_view(figures: Figures, route: str, path: str) -> dict[str, Any]:
    """The voice KPIs (bridge/kpi.py) of one route's path, primary calls only:

    - `calls_ended`: the calls whose outcome was counted (the sum of `outcomes`);
    - `outcomes`: each outcome's `count` and `share` of `calls_ended`, every `Outcome` in its
      order, then any other outcome the figures hold (another version's), sorted;
    - `first_prompt`: `calls` with a measured wait for the first prompt, its median `p50_s` and
      `p95_s`, estimated from the histogram's buckets as Prometheus' `histogram_quantile` does
      (linear interpolation within the bucket holding the rank; the largest finite bound when
      it falls in `+Inf`), so no finer than the buckets of bridge/metrics.py;
    - `turns_per_call` and `duration_mean_s`: means over the calls whose start was seen where
      they ended (not those taken over from another instance): the histograms' sum over count;
    - `no_input_per_call`: noUserInput events over `calls_ended`.

    Shares, quantiles and means are null without data; counts are 0.
    """
    counts = {o: v for (r, p, o), v in figures.outcomes.items() if r == route and p == path}
    ended = sum(counts.values())
    names = [o.value for o in Outcome]
    names += sorted(set(counts) - set(names))
    first = figures.first_prompt.get((route, path), Turns())
    no_inputs = figures.no_inputs.get((route, path), 0.0)
    return {
        "calls_ended": round(ended),
        "outcomes": {
            name: {
                "count": round(counts.get(name, 0.0)),
                "share": counts.get(name, 0.0) / ended if ended else None,
            }
            for name in names
        },
        "first_prompt": {
            "calls": round(first.count),
            "p50_s": histogram_quantile(first.buckets, 0.5),
            "p95_s": histogram_quantile(first.buckets, 0.95),
        },
        "turns_per_call": _mean(figures.call_turns.get((route, path))),
        "no_input_per_call": no_inputs / ended if ended else None,
        "duration_mean_s": _mean(figures.call_duration.get((route, path))),
    }


def route_views(config: Config, figures: Figures) -> list[dict[str, Any]]:
    """One view per configured route, in config order (see the module doc)."""
    policies = describe_routes(config)["routes"]
    started, active = figures.started, figures.active
    decisions, compared, turns = figures.decisions, figures.comparisons, figures.turns
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
                "kpis": {path: kpi_view(figures, name, path) for path in PATHS},
            }
        )
    return views


def fleet_view(
    status: Mapping[str, Any],
    local: Figures,
    others: Mapping[str, Figures],
    *,
    others_read: bool,
) -> tuple[dict[str, Any], Figures]:
    """The state's `fleet` and the figures the routes show: this instance's own (`local`) and
    those of the other instances `status` lists alive (`Cluster.status()`), summed; this
    instance's own only while the store is down or the others' could not be read. Instances are
    listed without their advertise URL."""
    this = status["instance_id"]
    shared = status["store"] == "ok" and others_read
    counted = {this: local}
    if shared:
        for instance in status["instances"]:
            found = others.get(instance["id"])
            if instance["id"] != this and found is not None:
                counted[instance["id"]] = found
    instances = [
        {
            "id": instance["id"],
            "calls": instance["calls"],
            "draining": instance["draining"],
            "last_seen": instance["last_seen"],
            "this": instance["id"] == this,
            "counted": instance["id"] in counted,
            "calls_started": (
                counted[instance["id"]].calls_started() if instance["id"] in counted else None
            ),
        }
        for instance in status["instances"]
    ]
    fleet = {
        "store": status["store"],
        "instance_id": this,
        "figures": "fleet" if shared else "local",
        "instances": instances,
    }
    return fleet, sum_figures(counted.values())


def merged_entries(*lists: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Divergence-log entries of several lists (the fleet's, this instance's ring) newest first,
    each once: an entry is its route, conversation, turn and time."""
    seen: set[tuple[Any, ...]] = set()
    out: list[Mapping[str, Any]] = []
    for entries in lists:
        for entry in entries:
            key = tuple(entry.get(k) for k in ("route", "conversation_id", "turn", "time"))
            if key not in seen:
                seen.add(key)
                out.append(entry)
    # ISO-8601 UTC times of one format: their text sorts as they do
    out.sort(key=lambda e: str(e.get("time") or ""), reverse=True)
    return out


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
