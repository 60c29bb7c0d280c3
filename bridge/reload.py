"""Load a complete, validated gateway state (config + mapping engine) from a config file.

Reads the config file, the override file beside it and the mapping directory it names; touches
nothing global, so a failed load leaves the running gateway as it was. `check_reloadable` refuses
a new state that changes what a running gateway cannot apply (`RESTART_ONLY`). Also renders the
route summary of `GET /admin/routes`, which never contains tokens or upstream URLs.

The override file (`<stem>.overrides.yaml` beside the config, written by the migration console)
holds per-route migration settings changed at run time — `voicegateway_percent` and `force` —
so the operator's file keeps its comments and a restart or reload keeps the change. Its values
win over the config file's; routes it names that the config no longer has are ignored.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bridge.config import Config, Route, load_config
from bridge.errors import ConfigError
from bridge.mapping.engine import Engine
from bridge.mapping.loader import load_mappings

__all__ = [
    "OVERRIDABLE",
    "RESTART_ONLY",
    "Overrides",
    "State",
    "apply_overrides",
    "check_reloadable",
    "describe_routes",
    "load_state",
    "overrides_path",
    "read_overrides",
    "write_overrides",
]

# Migration settings the override file may set, per route.
OVERRIDABLE = ("voicegateway_percent", "force")
# {route: {setting: value}}, settings from OVERRIDABLE.
Overrides = dict[str, dict[str, Any]]
_OVERRIDES_HEADER = (
    "# Written by the acvg-bridge migration console: run-time changes to the migration policy.\n"
    "# Values here win over the config file beside it; delete a line (or the file) and reload\n"
    "# to go back to the config file's value.\n"
)


@dataclass(frozen=True)
class State:
    """Everything a reload replaces, built before anything is swapped."""

    config: Config
    engine: Engine


def load_state(
    config_path: str | Path,
    *,
    listen_override: str | None = None,
    env: dict[str, str] | None = None,
) -> State:
    """Read and validate `config_path` and the mappings it names.

    `listen_override` replaces the file's `listen` (the `serve --listen` option). Raises
    ConfigError or MappingError, each naming the file, the field path and the reason.
    """
    config = load_config(config_path, env=env)
    override_file = overrides_path(config_path)
    config = apply_overrides(config, read_overrides(override_file), file=str(override_file))
    if listen_override is not None:
        config = config.model_copy(update={"listen": listen_override})
    engine = Engine(load_mappings(Path(config.mappings) if config.mappings else None))
    return State(config=config, engine=engine)


def overrides_path(config_path: str | Path) -> Path:
    """The override file beside `config_path`: `bridge.yaml` → `bridge.overrides.yaml`."""
    path = Path(config_path)
    return path.with_name(f"{path.stem}.overrides.yaml")


def read_overrides(path: Path) -> Overrides:
    """Parse an override file (a missing file is no overrides); ConfigError names what is wrong."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError("(file)", f"cannot read: {exc.strerror}", file=file) from None
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("(document)", f"invalid YAML: {exc}", file=file) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - {"routes"}:
        raise ConfigError("(document)", "must be a mapping with only a `routes` key", file=file)
    routes = raw.get("routes") or {}
    if not isinstance(routes, dict):
        raise ConfigError("routes", "must be a mapping of route names", file=file)
    out: Overrides = {}
    for name, body in routes.items():
        where = f"routes.{name}"
        if not isinstance(body, dict) or set(body) != {"migration"}:
            raise ConfigError(where, "must hold only `migration`", file=file)
        migration = body["migration"]
        if not isinstance(migration, dict):
            raise ConfigError(f"{where}.migration", "must be a mapping", file=file)
        unknown = sorted(str(key) for key in set(migration) - set(OVERRIDABLE))
        if unknown:
            raise ConfigError(f"{where}.migration.{unknown[0]}", "cannot be overridden", file=file)
        out[str(name)] = dict(migration)
    return out


def apply_overrides(config: Config, overrides: Overrides, *, file: str | None = None) -> Config:
    """`config` with the override values in, validated as a whole (a contradiction such as
    `force: voicegateway` on a legacy-only route is a ConfigError naming the override file)."""
    wanted = {name: values for name, values in overrides.items() if name in config.routes}
    if not wanted:
        return config
    raw = config.model_dump()
    for name, values in wanted.items():
        raw["routes"][name]["migration"].update(values)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(part) for part in first["loc"]) or "(document)"
        raise ConfigError(path, first["msg"], file=file) from None


def write_overrides(path: Path, overrides: Overrides) -> None:
    """Replace the override file atomically (a temporary file renamed over it)."""
    routes = {
        name: {"migration": dict(values)} for name, values in sorted(overrides.items()) if values
    }
    text = _OVERRIDES_HEADER + yaml.safe_dump({"routes": routes}, sort_keys=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# Settings a running gateway builds its machinery from once, at start-up, so a reload cannot
# apply them: the listening socket, the request body limit (fixed in aiohttp's Application), the
# upstream TLS context (shared by every upstream connection) and the divergence log file.
# Everything else applies on reload (routes, tokens, mappings, public_url, console thresholds,
# drain_timeout_s, divergence_log.sample_rate); calls in flight keep the route they started with.
RESTART_ONLY = {
    "listen": "listen elsewhere",
    "max_body_bytes": "change the request body limit",
    "tls.ca_file": "use another CA bundle",
    "tls.verify": "change certificate checks",
    "divergence_log.path": "write the divergence log elsewhere",
    "divergence_log.max_bytes": "change the divergence log's size limit",
    "cluster.redis_url": "use another state store",
    "cluster.instance_id": "change its instance id",
    "cluster.advertise_url": "change the URL its peers use",
    "cluster.lease_s": "change its lease",
}


def check_reloadable(current: Config, new: Config, *, file: str | None = None) -> None:
    """Raise ConfigError naming the first setting of `RESTART_ONLY` that `new` changes."""
    for path, purpose in RESTART_ONLY.items():
        running, wanted = _setting(current, path), _setting(new, path)
        if wanted != running:
            raise ConfigError(
                path,
                f"cannot change on reload (running with {_shown(running)}, file says "
                f"{_shown(wanted)}); restart the bridge to {purpose}",
                file=file,
            )


def _setting(config: Config, path: str) -> object:
    value: object = config
    for name in path.split("."):
        value = getattr(value, name)
    return value


def _shown(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def describe_routes(config: Config) -> dict[str, Any]:
    """`{"routes": {name: summary}}`: paths, migration policy and async mode of every route."""
    return {"routes": {name: _describe(route) for name, route in config.routes.items()}}


def _describe(route: Route) -> dict[str, Any]:
    paths = [
        path
        for path, upstream in (("legacy", route.legacy), ("voicegateway", route.voicegateway))
        if upstream is not None
    ]
    migration = route.migration
    return {
        "paths": paths,
        "async_mode": route.async_mode,
        "migration": {
            "voicegateway_percent": migration.voicegateway_percent,
            "sticky_key": migration.sticky_key,
            "force": migration.force,
            "shadow": migration.shadow,
            "rules": [
                {"match": rule.match.model_dump(exclude_none=True), "path": rule.path}
                for rule in migration.rules
            ],
        },
    }
