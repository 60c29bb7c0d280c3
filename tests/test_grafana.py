"""The Grafana dashboards and provisioning in grafana/: generated JSON up to date, provisioning a
stock Grafana would load, every panel query valid PromQL (checked by the real `promtool`) naming
only metrics the bridge exports, and the panels the migration needs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.metrics import Metrics
from tools import grafana_dashboards
from tools.promql import binary, exported_series, selected_metrics, substitute_grafana_variables

ROOT = Path(__file__).resolve().parent.parent
PROVISIONING = ROOT / "grafana" / "provisioning"
# Where the provisioning folder is mounted in a stock Grafana image.
MOUNT = "/etc/grafana/provisioning"
DASHBOARD_FILES = sorted(grafana_dashboards.DASHBOARD_DIR.glob("*.json"))


@pytest.fixture
def promtool() -> str:
    try:
        return binary("promtool")
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title + refId, expr) of every panel target."""
    return [
        (f"{p['title']} {t['refId']}", t["expr"]) for p in panels(dashboard) for t in p["targets"]
    ]


def all_queries() -> list[tuple[str, str]]:
    return [q for path in DASHBOARD_FILES for q in queries(load(path))]


def check_rules(
    promtool: str, exprs: list[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on a recording rules file made of the expressions: promtool cannot
    parse a bare query, but it parses every rule's expr."""
    rules = [{"record": f"acvg_panel:query_{n}", "expr": expr} for n, expr in enumerate(exprs)]
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    return subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_committed_dashboards_match_the_generator() -> None:
    assert grafana_dashboards.stale_files() == [], "run: python -m tools.grafana_dashboards"
    assert [p.name for p in DASHBOARD_FILES] == sorted(grafana_dashboards.dashboards())


def test_generator_check_reports_a_stale_file(tmp_path: Path) -> None:
    for name, dashboard in grafana_dashboards.dashboards().items():
        (tmp_path / name).write_text(grafana_dashboards.render(dashboard) + " ")
    assert grafana_dashboards.stale_files(tmp_path) == sorted(grafana_dashboards.dashboards())


def test_datasource_provisioning_defines_the_default_prometheus() -> None:
    files = sorted((PROVISIONING / "datasources").glob("*.yaml"))
    assert files
    sources = [s for f in files for s in yaml.safe_load(f.read_text())["datasources"]]
    [source] = sources
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    assert source["access"] == "proxy"
    assert source["uid"] and source["url"]


def test_dashboard_provider_points_at_the_json_when_the_folder_is_mounted() -> None:
    [provider_file] = sorted((PROVISIONING / "dashboards").glob("*.yaml"))
    config = yaml.safe_load(provider_file.read_text())
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file"
    relative = grafana_dashboards.DASHBOARD_DIR.relative_to(PROVISIONING)
    assert provider["options"]["path"] == f"{MOUNT}/{relative.as_posix()}"
    assert DASHBOARD_FILES


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_model_is_complete(path: Path) -> None:
    dashboard = load(path)
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["title"] and panel["description"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip()


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_panels_fit_the_grid_without_overlapping(path: Path) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in load(path)["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_panel_query_parses(promtool: str, tmp_path: Path) -> None:
    exprs = [substitute_grafana_variables(expr) for _, expr in all_queries()]
    assert not [e for e in exprs if "$" in e], "a Grafana variable without a substitution"
    result = check_rules(promtool, exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_the_parse_check_catches_a_broken_query(promtool: str, tmp_path: Path) -> None:
    result = check_rules(promtool, ["sum by (path) (rate(acvg_calls_started_total[5m])"], tmp_path)
    assert result.returncode != 0


def test_panel_queries_name_only_exported_metrics() -> None:
    exported = exported_series(Metrics().registry)
    used: set[str] = set()
    for title, expr in all_queries():
        names = selected_metrics(substitute_grafana_variables(expr))
        assert names, f"{title}: selects no metric"
        assert names <= exported, f"{title}: {sorted(names - exported)} not exported"
        used |= names
    # And every metric of design §2.4 is on a dashboard.
    families = {re.sub(r"_(total|bucket|count|sum|created|info)$", "", n) for n in exported}
    shown = {re.sub(r"_(total|bucket|count|sum|created|info)$", "", n) for n in used}
    assert families == shown


def test_metric_name_extraction_sees_through_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{x="b_total"}[5m]))) '
        '/ ignoring (path) 1.5e3 * b offset 1h and on (c) count_values("v", d)'
    )
    assert selected_metrics(expr) == {"a_bucket", "b", "d"}


def test_histogram_quantiles_keep_the_le_label() -> None:
    for title, expr in all_queries():
        for match in re.finditer(r"histogram_quantile\([^,]+,\s*sum by \(([^)]*)\)", expr):
            assert "le" in [label.strip() for label in match.group(1).split(",")], title


def main_dashboard() -> dict[str, Any]:
    return load(grafana_dashboards.DASHBOARD_DIR / "acvg-migration.json")


def test_main_dashboard_has_a_route_variable_used_by_route_panels() -> None:
    dashboard = main_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    route = variables["route"]
    assert route["includeAll"] and route["multi"]
    assert "label_values(acvg_calls_started_total, route)" in route["definition"]
    with_route = [expr for _, expr in all_queries() if 'route=~"$route"' in expr]
    assert len(with_route) >= len(all_queries()) * 2 // 3


def test_main_dashboard_shows_legacy_and_voicegateway_side_by_side() -> None:
    by_title = {p["title"]: p for p in panels(main_dashboard())}
    pairs = ["Calls started", "Active calls", "Turn latency", "Upstream errors"]
    for name in pairs:
        legacy, vg = by_title[f"{name} — legacy"], by_title[f"{name} — voicegateway"]
        assert legacy["gridPos"]["y"] == vg["gridPos"]["y"], name
        assert legacy["gridPos"]["x"] < vg["gridPos"]["x"], name
        assert all('path="legacy"' in t["expr"] for t in legacy["targets"]), name
        assert all('path="voicegateway"' in t["expr"] for t in vg["targets"]), name


def test_main_dashboard_answers_the_migration_questions() -> None:
    by_title = {p["title"]: p for p in panels(main_dashboard())}

    def exprs(title: str) -> str:
        return " ".join(t["expr"] for t in by_title[title]["targets"])

    assert "acvg_calls_active" in exprs("Active calls — voicegateway")
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}," in exprs("Turn latency — legacy")
    assert "acvg_routing_decisions_total" in exprs("Routing split")
    assert 'reason="fallback"' in exprs("Fallbacks to legacy")
    assert 'result="match"' in exprs("Shadow match rate per node")
    assert "by (node)" in exprs("Shadow match rate per node")
    assert "topk(10" in exprs("Top mismatching fields")
    assert 'result!="ok"' in exprs("Unmapped and failed translations")
    assert "acvg_vg_ack_seconds_bucket" in exprs("Voice Gateway ack latency")
    steps = by_title["Voice Gateway ack latency"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "red", "value": 5} in steps
    assert "acvg_vg_ack_timeouts_total" in exprs("Voice Gateway ack timeouts")
    assert "acvg_rejected_requests_total" in exprs("Rejected requests")
