"""The Prometheus rules in prometheus/: `promtool check rules` clean, `promtool test rules`
passing, every alert with a case where it fires and one where it stays silent, and the rules
selecting only metrics the bridge exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.metrics import Metrics
from tools.promql import binary, exported_series, selected_metrics

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus" / "acvg.rules.yml"
RULE_TESTS = ROOT / "prometheus" / "tests" / "acvg.rules.test.yml"
REQUIRED_ALERTS = {
    "AcvgShadowMismatchRateHigh",
    "AcvgVgAckTimeouts",
    "AcvgFallbackSpike",
    "AcvgUpstreamErrorRateHigh",
    "AcvgTurnLatencyP99Regression",
    "AcvgRolloutRolledBack",
}
# README sections the alerts' runbooks point at; the rollout plan's alerts have their own.
RUNBOOKS = {"README.md#operating-a-migration", "README.md#automatic-rollout"}
RECORD_NAME = re.compile(r"[a-z_]+:acvg_[a-z0-9_]+:[a-z0-9_]+")


@pytest.fixture
def promtool() -> str:
    try:
        return binary("promtool")
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


def promtool_run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False
    )


def rules(document: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    document = document or yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules() if "alert" in r}


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = promtool_run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_example_config_passes_promtool_and_loads_the_rules(promtool: str) -> None:
    config = RULES.parent / "prometheus.yml"
    result = promtool_run(promtool, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load(config.read_text())["rule_files"] == [RULES.name]


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = promtool_run(promtool, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_required_alerts_exist_with_severity_and_runbook() -> None:
    assert set(alerts()) >= REQUIRED_ALERTS
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["runbook"] in RUNBOOKS, name
        assert f"`{name}`" in readme, f"README does not explain {name}"
    headings = {
        line[3:].strip().lower().replace(" ", "-")
        for line in readme.splitlines()
        if line.startswith("## ")
    }
    for runbook in RUNBOOKS:  # each anchor is a README heading
        assert runbook.partition("#")[2] in headings, runbook


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert firing == set(alerts())
    assert silent == set(alerts())


@pytest.mark.parametrize("alert", sorted(alerts()))
def test_unit_tests_fail_when_the_alert_never_fires(
    alert: str, promtool: str, tmp_path: Path
) -> None:
    document = yaml.safe_load(RULES.read_text())
    for rule in rules(document):
        if rule.get("alert") == alert:
            rule["expr"] = "vector(1) > 2"
    (tmp_path / "tests").mkdir()
    (tmp_path / RULES.name).write_text(yaml.safe_dump(document))
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    result = promtool_run(promtool, "test", "rules", str(tmp_path / "tests" / RULE_TESTS.name))
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr


def test_rules_select_only_exported_metrics_and_recorded_series() -> None:
    exported = exported_series(Metrics().registry)
    recorded: set[str] = set()
    for rule in rules():
        names = selected_metrics(rule["expr"])
        assert names <= exported | recorded, (rule, sorted(names - exported - recorded))
        if "record" in rule:
            assert RECORD_NAME.fullmatch(rule["record"]), rule["record"]
            recorded.add(rule["record"])


def test_alert_thresholds_match_the_dashboard() -> None:
    from tools.grafana_dashboards import P99_REGRESSION_RATIO, VG_ACK_BUDGET_S

    assert f"{P99_REGRESSION_RATIO} * " in alerts()["AcvgTurnLatencyP99Regression"]["expr"]
    assert f"{VG_ACK_BUDGET_S} s" in alerts()["AcvgVgAckTimeouts"]["annotations"]["summary"]
