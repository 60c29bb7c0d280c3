"""Generate the Grafana dashboards in grafana/ from plain dicts (Grafana's dashboard JSON model).

`python -m tools.grafana_dashboards` rewrites the committed JSON; `--check` exits 1 when it is
out of date. Panels query only metrics the bridge exports (design §2.4), never recording rules,
so the dashboards work against any Prometheus scraping the bridge.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "grafana" / "provisioning" / "dashboards" / "acvg"

PATHS = ("legacy", "voicegateway")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ROUTE = 'route=~"$route"'
ROLE = 'role=~"$role"'
RATE = "[$__rate_interval]"
GRID_WIDTH = 24
# The Voice Gateway app must ack within this (jambonz drops the call after 5 s without an ack).
VG_ACK_BUDGET_S = 5
# The alert AcvgTurnLatencyP99Regression fires above this voicegateway/legacy p99 ratio.
P99_REGRESSION_RATIO = 1.5

Panel = dict[str, Any]


@dataclass
class Target:
    expr: str
    legend: str = "__auto"
    instant: bool = False


@dataclass
class Spec:
    """One panel before layout: type, title, description, queries and look."""

    kind: str
    title: str
    description: str
    targets: list[Target]
    width: int = 12
    height: int = 8
    unit: str = "short"
    options: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)


def _quantiles(metric: str, selector: str, legend: str) -> list[Target]:
    return [
        Target(
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{selector}}}{RATE})))",
            legend.format(q=f"p{round(q * 100)}"),
        )
        for q in (0.5, 0.95, 0.99)
    ]


def _timeseries(title: str, description: str, *targets: Target, **look: Any) -> Spec:
    look.setdefault("custom", {"fillOpacity": 10, "showPoints": "never"})
    return Spec("timeseries", title, description, list(targets), **look)


def _per_path(title: str, description: str, make: Any, **look: Any) -> list[Spec]:
    """The same panel for legacy (left) and voicegateway (right), side by side."""
    return [_timeseries(f"{title} — {path}", description, *make(path), **look) for path in PATHS]


def _traffic() -> list[Spec]:
    return [
        *_per_path(
            "Calls started",
            "Calls started per second on this path, by role (primary serves the caller; "
            "shadow mirrors a call served by the other path).",
            lambda p: [
                Target(
                    f'sum by (role) (rate(acvg_calls_started_total{{{ROUTE}, path="{p}"}}{RATE}))',
                    "{{role}}",
                )
            ],
            unit="cps",
        ),
        *_per_path(
            "Active calls",
            "Calls in progress on this path, by role.",
            lambda p: [
                Target(f'sum by (role) (acvg_calls_active{{{ROUTE}, path="{p}"}})', "{{role}}")
            ],
        ),
        _timeseries(
            "Calls ended by reason",
            "Primary calls ended per second, by path and reason (client_disconnected, "
            "bot_disconnected, transferred, error, expired, other).",
            Target(
                "sum by (path, reason) "
                f'(rate(acvg_calls_ended_total{{{ROUTE}, role="primary"}}{RATE}))',
                "{{path}} {{reason}}",
            ),
            unit="cps",
            width=24,
        ),
    ]


def _routing() -> list[Spec]:
    split = Target(
        f"sum by (path) (increase(acvg_routing_decisions_total{{{ROUTE}}}[$__range]))",
        "{{path}}",
        instant=True,
    )
    fallback_share = Target(
        f'sum(increase(acvg_routing_decisions_total{{{ROUTE}, reason="fallback"}}[$__range])) '
        "/ (sum(increase(acvg_routing_decisions_total"
        f'{{{ROUTE}, path="voicegateway"}}[$__range])) '
        f'+ sum(increase(acvg_routing_decisions_total{{{ROUTE}, reason="fallback"}}[$__range])))',
        "fallback share",
        instant=True,
    )
    return [
        Spec(
            "piechart",
            "Routing split",
            "Which path served the calls in the time range (primary calls; shadows not counted).",
            [split],
            width=6,
            options={
                "pieType": "donut",
                "legend": {"displayMode": "table", "placement": "right", "values": ["percent"]},
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            },
        ),
        _timeseries(
            "Routing decisions by reason",
            "Path decisions per second: percent (sticky share), rule, forced (kill switch), "
            "single (one upstream), fallback (voicegateway could not start the call).",
            Target(
                f"sum by (path, reason) (rate(acvg_routing_decisions_total{{{ROUTE}}}{RATE}))",
                "{{path}} {{reason}}",
            ),
            unit="cps",
        ),
        Spec(
            "stat",
            "Fallbacks to legacy",
            "Share of calls meant for voicegateway that legacy served because voicegateway "
            "could not start them, over the time range.",
            [fallback_share],
            width=6,
            unit="percentunit",
            defaults={
                "thresholds": _thresholds(("green", None), ("orange", 0.01), ("red", 0.05)),
            },
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        ),
    ]


def _latency() -> list[Spec]:
    ratio = Target(
        "histogram_quantile(0.99, sum by (route, le) (rate(acvg_turn_duration_seconds_bucket"
        f'{{{ROUTE}, path="voicegateway"}}{RATE}))) / histogram_quantile(0.99, sum by (route, le) '
        f'(rate(acvg_turn_duration_seconds_bucket{{{ROUTE}, path="legacy"}}{RATE})))',
        "{{route}}",
    )
    return [
        *_per_path(
            "Turn latency",
            "From caller input received to that turn's outputs complete: p50, p95, p99 "
            "(role variable: primary, shadow or both).",
            lambda p: _quantiles(
                "acvg_turn_duration_seconds", f'{ROUTE}, {ROLE}, path="{p}"', "{q}"
            ),
            unit="s",
        ),
        _timeseries(
            "Turn latency p99 ratio voicegateway / legacy",
            "Above 1 the new path is slower. The alert AcvgTurnLatencyP99Regression fires "
            f"above {P99_REGRESSION_RATIO} (red line) when the voicegateway p99 is also above "
            "250 ms.",
            ratio,
            width=24,
            defaults={"thresholds": _thresholds(("green", None), ("red", P99_REGRESSION_RATIO))},
            custom={"fillOpacity": 0, "showPoints": "never", "thresholdsStyle": {"mode": "line"}},
        ),
    ]


def _kpis() -> list[Spec]:
    def ratio(metric: str, per: str) -> str:
        return (
            f"sum by (path) (rate({metric}{{{ROUTE}}}{RATE})) / "
            f"sum by (path) (rate({per}{{{ROUTE}}}{RATE}))"
        )

    return [
        *_per_path(
            "Call outcomes",
            "How primary calls ended for the caller (bridge/kpi.py): caller_hangup, bot_hangup, "
            "transferred, no_input_giveup, error, early_hangup (gone before the first prompt or "
            "within migration.early_hangup_s), as a share of the path's ended calls.",
            lambda p: [
                Target(
                    f'sum by (outcome) (rate(acvg_call_outcomes_total{{{ROUTE}, path="{p}"}}'
                    f"{RATE})) / ignoring (outcome) group_left sum (rate("
                    f'acvg_call_outcomes_total{{{ROUTE}, path="{p}"}}{RATE}))',
                    "{{outcome}}",
                )
            ],
            unit="percentunit",
        ),
        _timeseries(
            "Time to first prompt",
            "From the start event to VAIC getting the call's first prompt, p50 and p95 per path.",
            *[
                Target(
                    f"histogram_quantile({q}, sum by (path, le) (rate("
                    f"acvg_time_to_first_prompt_seconds_bucket{{{ROUTE}}}{RATE})))",
                    f"{{{{path}}}} p{round(q * 100)}",
                )
                for q in (0.5, 0.95)
            ],
            unit="s",
            width=8,
        ),
        _timeseries(
            "Turns per call and no-input rate",
            "Mean caller turns per ended call, and noUserInput events per turn, per path.",
            Target(
                ratio("acvg_call_turns_sum", "acvg_call_turns_count"), "{{path}} turns per call"
            ),
            Target(
                ratio("acvg_no_input_events_total", "acvg_call_turns_sum"),
                "{{path}} no-input per turn",
            ),
            width=8,
        ),
        _timeseries(
            "Call duration",
            "Mean and p95 duration of primary calls per path.",
            Target(
                ratio("acvg_call_duration_seconds_sum", "acvg_call_duration_seconds_count"),
                "{{path}} mean",
            ),
            Target(
                "histogram_quantile(0.95, sum by (path, le) (rate("
                f"acvg_call_duration_seconds_bucket{{{ROUTE}}}{RATE})))",
                "{{path}} p95",
            ),
            unit="s",
            width=8,
        ),
    ]


def _rollout() -> list[Spec]:
    return [
        _timeseries(
            "Rollout step",
            "The migration plan's current step per route: its voicegateway_percent (design "
            "§2.7). Empty for routes without migration.plan.",
            Target(f"max by (route) (acvg_rollout_step{{{ROUTE}}})", "{{route}}"),
            unit="percent",
            defaults={"min": 0, "max": 100},
            custom={"fillOpacity": 0, "showPoints": "never", "lineInterpolation": "stepAfter"},
        ),
        Spec(
            "bargauge",
            "Rollout decisions",
            "The plans' verdicts over the time range per route: promote (next step), hold, "
            "rollback (previous step, or legacy at the first); dry runs count too. "
            "GET /admin/plan?route=R gives the last verdict with each gate's figures.",
            [
                Target(
                    "sum by (route, decision) "
                    f"(increase(acvg_rollout_decisions_total{{{ROUTE}}}[$__range]))",
                    "{{route}} {{decision}}",
                    instant=True,
                )
            ],
            options={
                "displayMode": "basic",
                "orientation": "horizontal",
                "showUnfilled": True,
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            },
        ),
    ]


def _shadow() -> list[Spec]:
    nonmatch = f'{ROUTE}, result!="match"'
    return [
        _timeseries(
            "Shadow match rate per node",
            "Share of compared activities that matched between the two paths, per mapping "
            "node. `unmapped` collects activities no mapping file produces.",
            Target(
                "sum by (node) (rate(acvg_shadow_comparisons_total"
                f'{{{ROUTE}, result="match"}}{RATE})) / sum by (node) '
                f"(rate(acvg_shadow_comparisons_total{{{ROUTE}}}{RATE}))",
                "{{node}}",
            ),
            unit="percentunit",
            defaults={"min": 0, "max": 1},
        ),
        _timeseries(
            "Shadow non-matches by result",
            "Compared activities per second that did not match: mismatch (fields differ), "
            "missing (only the primary produced it), extra (only the shadow did).",
            Target(
                f"sum by (node, result) (rate(acvg_shadow_comparisons_total{{{nonmatch}}}{RATE}))",
                "{{node}} {{result}}",
            ),
            unit="cps",
        ),
        Spec(
            "bargauge",
            "Top mismatching fields",
            "The ten node/field pairs that differed most often over the time range; fields are "
            "activity paths with list indices as [*].",
            [
                Target(
                    "topk(10, sum by (node, field) "
                    f"(increase(acvg_shadow_field_mismatches_total{{{ROUTE}}}[$__range])))",
                    "{{node}} {{field}}",
                    instant=True,
                )
            ],
            width=12,
            options={
                "displayMode": "basic",
                "orientation": "horizontal",
                "showUnfilled": True,
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            },
        ),
        _timeseries(
            "numberMetaData",
            "Caller numbers turned into numberMetaData: preserved, differs (the paths "
            "disagree), unparsable.",
            Target(
                f"sum by (result) (rate(acvg_number_metadata_total{{{ROUTE}}}{RATE}))", "{{result}}"
            ),
            unit="cps",
        ),
        _timeseries(
            "Bridge core busy",
            "Share of one core the bridge process was busy (CPU time over wall time, last "
            "second). Routes with migration.shadow_max_cpu start no shadow above their share "
            "and shed running ones.",
            Target("max(acvg_core_busy_ratio)", "busy"),
            unit="percentunit",
            defaults={"min": 0, "max": 1},
        ),
        _timeseries(
            "Shadows shed for load",
            "Shadow calls not started or stopped because the core was over the route's "
            "shadow_max_cpu: their turns are not compared, so the match rates rest on fewer calls.",
            Target(
                f'sum by (route) (rate(acvg_upstream_errors_total{{{ROUTE}, kind="shed"}}{RATE}))',
                "{{route}}",
            ),
            unit="cps",
        ),
    ]


def _translation() -> list[Spec]:
    return [
        _timeseries(
            "Unmapped and failed translations",
            "Verbs or activities with no mapping file (unmapped) or whose mapping failed "
            "(error), per direction. Not per route: translations carry no route label.",
            Target(
                f'sum by (direction, result) (rate(acvg_translations_total{{result!="ok"}}{RATE}))',
                "{{direction}} {{result}}",
            ),
            unit="cps",
        ),
        _timeseries(
            "Unmapped activities in shadow comparisons",
            "Activities either path produced that no mapping file emits (node `unmapped`).",
            Target(
                "sum by (result) (rate(acvg_shadow_comparisons_total"
                f'{{{ROUTE}, node="unmapped"}}{RATE}))',
                "{{result}}",
            ),
            unit="cps",
        ),
        _timeseries(
            "Translations by node",
            "Translations per second per direction and mapping node.",
            Target(
                f'sum by (direction, node) (rate(acvg_translations_total{{result="ok"}}{RATE}))',
                "{{direction}} {{node}}",
            ),
            unit="cps",
            width=24,
        ),
    ]


def _upstreams() -> list[Spec]:
    ack = _quantiles("acvg_vg_ack_seconds", ROUTE, "{q}")
    return [
        *_per_path(
            "Upstream errors",
            "Errors talking to this path's upstream, per kind (connect, timeout, http_5xx, "
            "ack_timeout, bad_frame, start_* for a shadow that could not start, ...).",
            lambda p: [
                Target(
                    "sum by (kind) "
                    f'(rate(acvg_upstream_errors_total{{{ROUTE}, path="{p}"}}{RATE}))',
                    "{{kind}}",
                )
            ],
            unit="cps",
        ),
        _timeseries(
            "Voice Gateway ack latency",
            f"How long the Voice Gateway app takes to ack a message: p50, p95, p99 against the "
            f"{VG_ACK_BUDGET_S} s budget (red line).",
            *ack,
            unit="s",
            defaults={"thresholds": _thresholds(("green", None), ("red", VG_ACK_BUDGET_S))},
            custom={"fillOpacity": 0, "showPoints": "never", "thresholdsStyle": {"mode": "line"}},
        ),
        _timeseries(
            "Voice Gateway ack timeouts",
            f"Messages the Voice Gateway app did not ack within {VG_ACK_BUDGET_S} s, per route.",
            Target(
                f"sum by (route) (increase(acvg_vg_ack_timeouts_total{{{ROUTE}}}{RATE}))",
                "{{route}}",
            ),
            custom={"drawStyle": "bars", "fillOpacity": 60, "showPoints": "never"},
        ),
    ]


def _requests() -> list[Spec]:
    return [
        _timeseries(
            "Rejected requests",
            "VAIC and admin requests rejected, per route and reason (auth, bad_request, "
            "not_found, too_large, ...). Not filtered by route: `_unknown` and `_admin` "
            "collect requests for no configured route.",
            Target(
                f"sum by (route, reason) (rate(acvg_rejected_requests_total{RATE}))",
                "{{route}} {{reason}}",
            ),
            unit="reqps",
            width=12,
        ),
        _timeseries(
            "Journal records dropped",
            "Sampled calls the journal (a route's `record`) did not write, per reason: "
            "queue_full (the writer is behind), max_bytes (the file is full), write_error.",
            Target(f"sum by (reason) (rate(acvg_journal_dropped_total{RATE}))", "{{reason}}"),
            unit="ops",
            width=6,
        ),
        Spec(
            "table",
            "Bridge versions",
            "Bridge instances per version (acvg_build_info).",
            [Target("count by (version) (acvg_build_info)", "{{version}}", instant=True)],
            width=6,
            options={"showHeader": True},
        ),
    ]


def _cluster() -> list[Spec]:
    return [
        _timeseries(
            "Live instances",
            "Instances each bridge sees in the shared store (1 without a cluster). Instances "
            "that disagree point at a partition or an unreachable Redis.",
            Target("max by (instance) (acvg_cluster_instances)", "{{instance}}"),
            unit="short",
            width=6,
        ),
        _timeseries(
            "Takeovers and forwarded requests",
            "Calls continued from the shared store (owner lost, or handed off at drain), and "
            "VAIC requests forwarded to the instance that owns the call.",
            Target(
                f"sum by (route, reason) (rate(acvg_takeovers_total{{{ROUTE}}}{RATE}))",
                "takeover {{route}} {{reason}}",
            ),
            Target(
                f"sum by (route) (rate(acvg_forwarded_requests_total{{{ROUTE}}}{RATE}))",
                "forwarded {{route}}",
            ),
            unit="reqps",
            width=12,
        ),
        _timeseries(
            "State store errors",
            "Failed Redis operations, per operation. Calls in flight go on from local state; "
            "taking over another instance's calls is unavailable meanwhile.",
            Target(f"sum by (op) (rate(acvg_store_errors_total{RATE}))", "{{op}}"),
            unit="ops",
            width=6,
        ),
    ]


ROWS: tuple[tuple[str, Any], ...] = (
    ("Traffic: legacy | voicegateway", _traffic),
    ("Routing", _routing),
    ("Turn latency: legacy | voicegateway", _latency),
    ("Voice KPIs: what callers lived through, legacy | voicegateway", _kpis),
    ("Rollout: the migration plans' steps and verdicts", _rollout),
    ("Shadow comparison", _shadow),
    ("Translation", _translation),
    ("Upstreams", _upstreams),
    ("Requests", _requests),
    ("Cluster", _cluster),
)


def _thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


def _render(spec: Spec, panel_id: int, x: int, y: int) -> Panel:
    targets = []
    for index, target in enumerate(spec.targets):
        rendered: dict[str, Any] = {
            "datasource": DATASOURCE,
            "refId": chr(ord("A") + index),
            "expr": target.expr,
            "legendFormat": target.legend,
            "range": not target.instant,
            "instant": target.instant,
        }
        if spec.kind == "table":
            rendered["format"] = "table"
        targets.append(rendered)
    defaults: dict[str, Any] = {"unit": spec.unit, **spec.defaults}
    if spec.kind == "timeseries":
        defaults["custom"] = spec.custom
    return {
        "id": panel_id,
        "type": spec.kind,
        "title": spec.title,
        "description": spec.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": spec.height, "w": spec.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": spec.options or {"legend": {"displayMode": "list", "placement": "bottom"}},
    }


def _layout(rows: Iterable[tuple[str, list[Spec]]]) -> Iterator[Panel]:
    """Rows in order; inside a row, panels left to right, wrapping at the grid width."""
    panel_id, y = 0, 0
    for title, specs in rows:
        panel_id += 1
        yield {
            "id": panel_id,
            "type": "row",
            "title": title,
            "collapsed": False,
            "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
            "panels": [],
        }
        y += 1
        x, line_height = 0, 0
        for spec in specs:
            if x + spec.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panel_id += 1
            yield _render(spec, panel_id, x, y)
            x += spec.width
            line_height = max(line_height, spec.height)
        y += line_height


def _variables() -> list[dict[str, Any]]:
    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
        },
        {
            "name": "route",
            "label": "Route",
            "type": "query",
            "datasource": DATASOURCE,
            "definition": "label_values(acvg_calls_started_total, route)",
            "query": {
                "qryType": 1,
                "query": "label_values(acvg_calls_started_total, route)",
                "refId": "PrometheusVariableQueryEditor-VariableQuery",
            },
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "refresh": 2,
            "sort": 1,
            "hide": 0,
            "regex": "",
        },
        {
            "name": "role",
            "label": "Latency role",
            "type": "custom",
            "query": "primary,shadow",
            "multi": False,
            "includeAll": True,
            "allValue": "primary|shadow",
            "current": {"selected": True, "text": "primary", "value": "primary"},
            "options": [
                {"selected": False, "text": "All", "value": "$__all"},
                {"selected": True, "text": "primary", "value": "primary"},
                {"selected": False, "text": "shadow", "value": "shadow"},
            ],
            "hide": 0,
        },
    ]


def migration_dashboard() -> dict[str, Any]:
    """The main dashboard: legacy and voicegateway side by side during a migration."""
    return {
        "uid": "acvg-migration",
        "title": "acvg-bridge: migration",
        "description": "AudioCodes Endpoint → Voice Gateway Endpoint migration through "
        "acvg-bridge: traffic, routing, latency and shadow comparison per path.",
        "tags": ["acvg-bridge"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "schemaVersion": 39,
        "version": 1,
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": _variables()},
        "panels": list(_layout((title, make()) for title, make in ROWS)),
    }


def dashboards() -> dict[str, dict[str, Any]]:
    """File name → dashboard, for every dashboard in grafana/."""
    return {"acvg-migration.json": migration_dashboard()}


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def stale_files(directory: Path = DASHBOARD_DIR) -> list[str]:
    """Dashboard files whose committed JSON differs from what this module generates."""
    stale = []
    for name, dashboard in dashboards().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != render(dashboard):
            stale.append(name)
    return stale


def write(directory: Path = DASHBOARD_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, dashboard in dashboards().items():
        (directory / name).write_text(render(dashboard), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate grafana/ dashboards.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"{DASHBOARD_DIR / name} is out of date: run python -m tools.grafana_dashboards")
        return 1 if stale else 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
