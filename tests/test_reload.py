"""Loading a gateway state from a config file, the check of what a reload may change, and the
route summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import Config, parse_config
from bridge.errors import ConfigError, MappingError
from bridge.mapping.engine import Engine
from bridge.mapping.loader import SHIPPED_DIR
from bridge.reload import RESTART_ONLY, check_reloadable, describe_routes, load_state

ROUTES: dict[str, Any] = {
    "support": {
        "token": "support-secret",
        "async_mode": True,
        "voicegateway": {"url": "ws://vg.example/app-secret"},
        "legacy": {"url": "https://legacy.example/bot", "token": "legacy-secret"},
        "migration": {
            "voicegateway_percent": 25,
            "sticky_key": "callee",
            "shadow": True,
            "rules": [{"match": {"caller_country": ["US"]}, "path": "legacy"}],
        },
    },
    "sales": {"token": "sales-secret", "legacy": {"url": "https://legacy.example/sales"}},
}


def _write(tmp_path: Path, **top: Any) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump({"admin_token": "admin-secret", "routes": ROUTES, **top}))
    return path


def test_load_state_builds_config_and_engine(tmp_path: Path) -> None:
    state = load_state(_write(tmp_path))
    assert set(state.config.routes) == {"support", "sales"}
    assert isinstance(state.engine, Engine)


def test_load_state_substitutes_env(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text("routes:\n  r:\n    token: ${T}\n    legacy: {url: 'https://l.example'}\n")
    assert load_state(path, env={"T": "from-env"}).config.routes["r"].token == "from-env"
    with pytest.raises(ConfigError, match=r"\$\{T\}: environment variable is not set"):
        load_state(path, env={})


def test_load_state_with_a_mapping_directory(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(SHIPPED_DIR, mappings)
    assert load_state(_write(tmp_path, mappings=str(mappings))).config.mappings == str(mappings)


def test_listen_override_replaces_the_file_value(tmp_path: Path) -> None:
    path = _write(tmp_path, listen="127.0.0.1:8080")
    assert load_state(path, listen_override="0.0.0.0:9000").config.listen == "0.0.0.0:9000"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("routes: [oops", r"bridge\.yaml: line \d+: invalid YAML"),
        ("bogus: 1\nroutes: {r: {token: t, legacy: {url: 'https://l'}}}", r"bogus: unknown key"),
        ("routes: {}", r"routes: .*at least one route"),
    ],
)
def test_invalid_config_names_file_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_state(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: \(file\): cannot read"):
        load_state(tmp_path / "nope.yaml")


def test_bad_mapping_directory(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"missing: \(dir\): not a directory"):
        load_state(_write(tmp_path, mappings=str(tmp_path / "missing")))
    broken = tmp_path / "broken"
    shutil.copytree(SHIPPED_DIR, broken)
    hangup = broken / "hangup.yaml"
    hangup.write_text(hangup.read_text() + "\nsurprise: true\n")
    with pytest.raises(MappingError) as info:
        load_state(_write(tmp_path, mappings=str(broken)))
    assert info.value.file == str(hangup)
    assert info.value.path == "surprise"


def test_check_reloadable_rejects_a_new_listen() -> None:
    body = {"routes": {"r": {"token": "t", "legacy": {"url": "https://l"}}}}
    current = parse_config(yaml.safe_dump({"listen": "127.0.0.1:8080", **body}), env={})
    same = parse_config(yaml.safe_dump({"listen": "127.0.0.1:8080", **body}), env={})
    moved = parse_config(yaml.safe_dump({"listen": "127.0.0.1:9090", **body}), env={})
    check_reloadable(current, same)
    with pytest.raises(ConfigError, match=r"f\.yaml: listen: cannot change on reload") as info:
        check_reloadable(current, moved, file="f.yaml")
    assert "127.0.0.1:9090" in str(info.value)


def _config(**top: Any) -> Config:
    body = {"routes": {"r": {"token": "t", "legacy": {"url": "https://l"}}}}
    return parse_config(yaml.safe_dump({**body, **top}), env={})


# What a running gateway applies on reload; with RESTART_ONLY it covers every setting.
APPLIED_ON_RELOAD = {
    "public_url",
    "admin_token",
    "mappings",
    "drain_timeout_s",
    "console",
    "routes",
    "divergence_log.sample_rate",
}


def test_every_setting_is_applied_on_reload_or_needs_a_restart() -> None:
    """A new config setting must be sorted into one or the other (and, if it is built into
    something at start-up, refused by check_reloadable)."""
    assert not set(RESTART_ONLY) & APPLIED_ON_RELOAD
    covered = set(RESTART_ONLY) | APPLIED_ON_RELOAD
    assert {path.split(".")[0] for path in covered} == set(Config.model_fields)
    for section in ("tls", "divergence_log"):
        fields = Config.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
        split = {path for path in covered if path.startswith(f"{section}.")}
        assert split == {f"{section}.{name}" for name in fields}


@pytest.mark.parametrize(
    ("top", "path", "shown"),
    [
        ({"max_body_bytes": 1_000_000}, "max_body_bytes", "running with 262144, file says 1000000"),
        ({"tls": {"verify": False}}, "tls.verify", "running with true, file says false"),
        (
            {"tls": {"ca_file": "/etc/ssl/other.pem"}},
            "tls.ca_file",
            "running with null, file says /etc/ssl/other.pem",
        ),
        (
            {"divergence_log": {"path": "/var/log/acvg/divergences.jsonl"}},
            "divergence_log.path",
            "running with null, file says /var/log/acvg/divergences.jsonl",
        ),
        (
            {"divergence_log": {"max_bytes": 4096}},
            "divergence_log.max_bytes",
            "running with 52428800, file says 4096",
        ),
    ],
)
def test_check_reloadable_refuses_what_needs_a_restart(
    top: dict[str, Any], path: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as info:
        check_reloadable(_config(), _config(**top), file="f.yaml")
    assert info.value.path == path
    assert str(info.value).startswith(f"f.yaml: {path}: cannot change on reload ({shown}); ")
    assert "restart the bridge" in str(info.value)


def test_check_reloadable_takes_what_a_running_gateway_applies(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(SHIPPED_DIR, mappings)
    changed = _config(
        public_url="https://bridge.example",
        admin_token="other",
        mappings=str(mappings),
        drain_timeout_s=5,
        console={"min_samples": 5},
        divergence_log={"sample_rate": 0.25},
        routes={"other": {"token": "o", "legacy": {"url": "https://o"}, "max_calls": 3}},
    )
    check_reloadable(_config(), changed)


def test_describe_routes(tmp_path: Path) -> None:
    summary = describe_routes(load_state(_write(tmp_path)).config)
    assert summary == {
        "routes": {
            "support": {
                "paths": ["legacy", "voicegateway"],
                "async_mode": True,
                "migration": {
                    "voicegateway_percent": 25,
                    "sticky_key": "callee",
                    "force": None,
                    "shadow": True,
                    "rules": [{"match": {"caller_country": ["US"]}, "path": "legacy"}],
                },
            },
            "sales": {
                "paths": ["legacy"],
                "async_mode": False,
                "migration": {
                    "voicegateway_percent": 0,
                    "sticky_key": "caller",
                    "force": None,
                    "shadow": False,
                    "rules": [],
                },
            },
        }
    }
    text = json.dumps(summary)
    assert "secret" not in text
