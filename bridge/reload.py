"""Load a complete, validated gateway state (config + mapping engine) from a config file.

Reads the config file and the mapping directory it names; touches nothing global, so a failed
load leaves the running gateway as it was. Also renders the route summary of `GET /admin/routes`,
which never contains tokens or upstream URLs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.config import Config, Route, load_config
from bridge.errors import ConfigError
from bridge.mapping.engine import Engine
from bridge.mapping.loader import load_mappings

__all__ = ["State", "check_reloadable", "describe_routes", "load_state"]


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
    if listen_override is not None:
        config = config.model_copy(update={"listen": listen_override})
    engine = Engine(load_mappings(Path(config.mappings) if config.mappings else None))
    return State(config=config, engine=engine)


def check_reloadable(current: Config, new: Config, *, file: str | None = None) -> None:
    """Raise ConfigError when `new` changes what a running gateway cannot change: `listen`."""
    if new.listen != current.listen:
        raise ConfigError(
            "listen",
            f"cannot change on reload (running on {current.listen}, file says {new.listen}); "
            "restart the bridge to listen elsewhere",
            file=file,
        )


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
