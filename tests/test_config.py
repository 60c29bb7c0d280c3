"""Configuration: schema, ${ENV} substitution, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load_config, parse_config, parse_listen, substitute_env
from bridge.errors import ConfigError

MINIMAL = """
routes:
  support:
    token: "${SUPPORT_TOKEN}"
    voicegateway:
      url: "ws://127.0.0.1:9/app"
"""

FULL = """
listen: "127.0.0.1:8080"
public_url: "https://bridge.example/"
admin_token: "${ACVG_ADMIN_TOKEN:-adm}"
mappings: null
routes:
  support:
    token: "t"
    async_mode: false
    default_region: "de"
    expires_seconds: 120
    turn_settle_ms: 300
    turn_timeout_ms: 4000
    input_hook: "voice"
    unmapped: drop
    sip_headers: {callIdentification: X-Conversation-ID}
    voicegateway:
      url: "wss://vg-endpoint.example/abc123"
    legacy:
      url: "https://ac-endpoint.example/xyz"
      token: "lt"
    migration:
      voicegateway_percent: 25
      sticky_key: caller
      shadow: true
      force: null
      rules:
        - match: {caller_country: ["US"]}
          path: legacy
"""


def test_minimal_config_with_env() -> None:
    config = parse_config(MINIMAL, env={"SUPPORT_TOKEN": "s3cret"})
    route = config.routes["support"]
    assert route.token == "s3cret"
    assert route.turn_settle_ms == 300
    assert route.turn_timeout_ms == 4000
    assert route.input_hook == "voice"
    assert route.single_path == "voicegateway"


def test_full_design_example_parses() -> None:
    config = parse_config(FULL, env={})
    assert config.public_url == "https://bridge.example"
    assert config.admin_token == "adm"
    route = config.routes["support"]
    assert route.default_region == "DE"
    assert route.migration.rules[0].path == "legacy"
    assert route.single_path is None


def test_missing_env_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL, env={})
    assert "SUPPORT_TOKEN" in str(info.value)


@pytest.mark.parametrize(
    ("patch", "path", "reason"),
    [
        ("    colour: blue\n", "routes.support.colour", "unknown key"),
        ("    turn_settle_ms: 5000\n", "routes.support", "turn_settle_ms"),
        ("    default_region: XX\n", "routes.support.default_region", "unknown region"),
        ("    unmapped: explode\n", "routes.support.unmapped", "drop"),
        (
            "    migration: {voicegateway_percent: 50}\n",
            "routes.support",
            "legacy upstream",
        ),
        ("    migration: {shadow: true}\n", "routes.support", "shadow"),
    ],
)
def test_errors_name_field_and_reason(patch: str, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + patch, env={"SUPPORT_TOKEN": "x"})
    assert info.value.path == path
    assert reason in info.value.reason


def test_route_needs_an_upstream() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("routes:\n  r:\n    token: t\n", env={})
    assert "upstream" in info.value.reason


def test_legacy_only_route_rejects_voicegateway_percent() -> None:
    text = (
        "routes:\n  r:\n    token: t\n    legacy: {url: 'http://x/y'}\n"
        "    migration: {voicegateway_percent: 10}\n"
    )
    with pytest.raises(ConfigError):
        parse_config(text, env={})


def test_bad_yaml_and_bad_document() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("routes: [", env={})
    assert "YAML" in info.value.reason
    with pytest.raises(ConfigError):
        parse_config("- a\n- b\n", env={})
    with pytest.raises(ConfigError) as info:
        parse_config("routes: {}\n", env={})
    assert info.value.path == "routes"


def test_bad_urls_and_names() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("routes:\n  r:\n    token: t\n    voicegateway: {url: 'http://x'}\n", env={})
    assert info.value.path == "routes.r.voicegateway.url"
    with pytest.raises(ConfigError):
        parse_config("routes:\n  'a/b':\n    token: t\n    voicegateway: {url: 'ws://x'}\n", env={})


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read" in info.value.reason
    good = tmp_path / "c.yaml"
    good.write_text(MINIMAL.replace("${SUPPORT_TOKEN}", "t"))
    assert "support" in load_config(good).routes


def test_listen_and_env_helpers() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9") == ("::1", 9)
    with pytest.raises(ValueError):
        parse_listen("8080")
    assert substitute_env("a${X:-d}b", {}) == "adb"
