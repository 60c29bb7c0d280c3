"""Steering pieces without HTTP: the override file (read, apply, write, loaded with the config),
change validation and the audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import parse_config
from bridge.console.steering import AuditLog, SteeringError, audit_path, parse_change
from bridge.errors import ConfigError
from bridge.reload import (
    apply_overrides,
    load_state,
    overrides_path,
    read_overrides,
    write_overrides,
)

DOC: dict[str, Any] = {
    "routes": {
        "r": {
            "token": "t",
            "voicegateway": {"url": "ws://127.0.0.1:9/vg"},
            "legacy": {"url": "http://127.0.0.1:9/l"},
            "migration": {"voicegateway_percent": 10, "rules": [{"match": {}, "path": "legacy"}]},
        },
        "old": {"token": "o", "legacy": {"url": "http://127.0.0.1:9/o"}},
    }
}


def test_override_file_sits_beside_the_config() -> None:
    assert overrides_path("/etc/acvg/bridge.yaml") == Path("/etc/acvg/bridge.overrides.yaml")
    assert audit_path(Path("/etc/acvg/bridge.yaml")) == Path("/etc/acvg/bridge.audit.jsonl")


def test_write_read_and_apply(tmp_path: Path) -> None:
    file = tmp_path / "x.overrides.yaml"
    assert read_overrides(file) == {}
    write_overrides(file, {"r": {"voicegateway_percent": 40.0, "force": None}, "gone": {}})
    assert file.read_text().startswith("# Written by the acvg-bridge migration console")
    assert read_overrides(file) == {"r": {"voicegateway_percent": 40.0, "force": None}}
    assert [p.name for p in tmp_path.iterdir()] == ["x.overrides.yaml"]  # no temp file left
    config = parse_config(yaml.safe_dump(DOC), env={})
    changed = apply_overrides(config, {"r": {"force": "legacy"}, "stale": {"force": "legacy"}})
    assert changed.routes["r"].migration.force == "legacy"
    assert changed.routes["r"].migration.rules == config.routes["r"].migration.rules
    assert changed.routes["old"] == config.routes["old"]
    assert apply_overrides(config, {}) is config


def test_load_state_applies_the_override_file(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump(DOC))
    assert load_state(config).config.routes["r"].migration.voicegateway_percent == 10
    write_overrides(overrides_path(config), {"r": {"voicegateway_percent": 90}})
    assert load_state(config).config.routes["r"].migration.voicegateway_percent == 90


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("routes: [1]", "routes: must be a mapping"),
        ("other: 1", "only a `routes` key"),
        ("routes: {r: {token: x}}", "routes.r: must hold only `migration`"),
        ("routes: {r: {migration: {shadow: false}}}", "migration.shadow: cannot be overridden"),
        ("routes: {r: {migration: 5}}", "routes.r.migration: must be a mapping"),
        ("routes: {r: {migration: {voicegateway_percent: 101}}}", "less than or equal to 100"),
        ("routes: {old: {migration: {force: voicegateway}}}", "routes.old"),
        ("routes: [", "invalid YAML"),
    ],
)
def test_a_bad_override_file_is_a_config_error_naming_it(
    tmp_path: Path, text: str, where: str
) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump(DOC))
    overrides_path(config).write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_state(config)
    assert "bridge.overrides.yaml" in str(caught.value)
    assert where in str(caught.value)


def test_parse_change() -> None:
    assert parse_change({"voicegateway_percent": 12}) == {"voicegateway_percent": 12.0}
    assert parse_change({"force": None, "voicegateway_percent": 0.5}) == {
        "voicegateway_percent": 0.5,
        "force": None,
    }
    for body in ({"voicegateway_percent": float("nan")}, {"force": "LEGACY"}, None, {"x": 1}):
        with pytest.raises(SteeringError) as caught:
            parse_change(body)
        assert caught.value.status == 400


def test_audit_log_keeps_recent_lines_across_restarts(tmp_path: Path) -> None:
    file = tmp_path / "bridge.audit.jsonl"
    log = AuditLog(file)
    for n in range(3):
        assert log.record({"setting": "force", "n": n})
    with file.open("a") as handle:
        handle.write("not json\n")
    again = AuditLog(file)
    assert [entry["n"] for entry in again.recent()] == [2, 1, 0]
    assert [json.loads(line)["n"] for line in file.read_text().splitlines()[:3]] == [0, 1, 2]
    memory = AuditLog(None)
    assert memory.record({"n": 1}) and memory.recent(0) == []
