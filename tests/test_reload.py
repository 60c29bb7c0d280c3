"""Loading a gateway state from a config file, the listen check and the route summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import parse_config
from bridge.errors import ConfigError, MappingError
from bridge.mapping.engine import Engine
from bridge.mapping.loader import SHIPPED_DIR
from bridge.reload import check_reloadable, describe_routes, load_state

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
