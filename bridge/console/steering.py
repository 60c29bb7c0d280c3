"""Steering a route from the console: validate a change, write the override file, reload
atomically, and record it in the audit log.

A change sets `voicegateway_percent` and/or `force` of one route. It is written to the override
file beside the config (`bridge.reload.overrides_path`), then the gateway reloads through the same
path as `POST /admin/reload` (`reload_gateway`): the config file and every override are read and
validated as a whole and swapped in one step; when that fails the override file is put back as it
was and nothing changes. Synchronous from reading to swapping, so two changes cannot interleave.
Note that the reload also takes in whatever the config file says now.

The audit log is JSON Lines beside the config (`<stem>.audit.jsonl`): one line per setting
changed, `{"time", "who", "route", "setting", "old", "new"}`; `who` is the token's name (`admin`).
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.app import Gateway
from bridge.errors import ConfigError, MappingError
from bridge.reload import OVERRIDABLE, apply_overrides, overrides_path, read_overrides
from bridge.reload import write_overrides as _write_overrides
from bridge.transport.admin import reload_gateway

__all__ = ["AuditLog", "SteeringError", "audit_path", "parse_change", "steer"]

log = logging.getLogger("bridge.console")
AUDIT_RECENT = 200
FORCE_VALUES = (None, "legacy", "voicegateway")


class SteeringError(Exception):
    """A change that cannot be made: HTTP status, error code and a message for the operator."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def audit_path(config_path: Path) -> Path:
    """The audit log beside `config_path`: `bridge.yaml` → `bridge.audit.jsonl`."""
    return config_path.with_name(f"{config_path.stem}.audit.jsonl")


class AuditLog:
    """Appends audit lines to a file (None: memory only) and keeps the recent ones in memory,
    starting with the file's last lines, so the page shows changes made before a restart."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._recent: deque[dict[str, Any]] = deque(maxlen=AUDIT_RECENT)
        if path is not None and path.exists():
            try:
                lines = path.read_text(encoding="utf-8").splitlines()[-AUDIT_RECENT:]
            except OSError as exc:
                log.warning("cannot read the audit log %s: %s", path, exc.strerror)
                lines = []
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    self._recent.append(entry)

    def record(self, entry: dict[str, Any]) -> bool:
        """Keep and append one line; False when the file could not be written (logged)."""
        self._recent.append(entry)
        if self.path is None:
            return True
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError as exc:
            log.error("cannot write the audit log %s: %s", self.path, exc.strerror)
            return False
        return True

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last `limit` entries, newest first."""
        return list(reversed(self._recent))[: max(0, limit)]


def parse_change(body: Any) -> dict[str, Any]:
    """The settings a steering request asks for; SteeringError(400) says what is wrong."""
    if not isinstance(body, Mapping) or not body:
        raise SteeringError(
            400, "bad_request", "send a JSON object with voicegateway_percent and/or force"
        )
    unknown = sorted(str(key) for key in body if key not in OVERRIDABLE)
    if unknown:
        raise SteeringError(
            400,
            "bad_request",
            f"{unknown[0]}: cannot be changed here (only voicegateway_percent and force)",
        )
    change: dict[str, Any] = {}
    if "voicegateway_percent" in body:
        value = body["voicegateway_percent"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 <= value <= 100
        ):
            raise SteeringError(
                400,
                "bad_request",
                f"voicegateway_percent: must be a number from 0 to 100, got {json.dumps(value)}",
            )
        change["voicegateway_percent"] = float(value)
    if "force" in body:
        value = body["force"]
        if value not in FORCE_VALUES:
            raise SteeringError(
                400,
                "bad_request",
                f'force: must be "legacy", "voicegateway" or null, got {json.dumps(value)}',
            )
        change["force"] = value
    return change


def _policy(gateway: Gateway, route: str) -> dict[str, Any]:
    migration = gateway.config.routes[route].migration
    return {key: getattr(migration, key) for key in OVERRIDABLE}


def steer(
    gateway: Gateway,
    route: str,
    change: Mapping[str, Any],
    *,
    who: str,
    audit: AuditLog,
    at: datetime,
) -> dict[str, Any]:
    """Apply `change` to `route` (see the module doc); returns `{"route", "old", "new"}`.

    Raises SteeringError: 404 unknown route, 409 no config file, 400 a change the route cannot
    take or a config that no longer loads (the message names file, field and reason).
    """
    if route not in gateway.config.routes:
        raise SteeringError(404, "not_found", f"no route {route!r}")
    if gateway.config_path is None:
        raise SteeringError(409, "no_config_file", "the bridge runs without a config file")
    # The route must be able to take the change at all (e.g. force: voicegateway needs one).
    try:
        apply_overrides(gateway.config, {route: dict(change)})
    except ConfigError as exc:
        raise SteeringError(400, "invalid_change", f"{exc.path}: {exc.reason}") from None
    file = overrides_path(gateway.config_path)
    try:
        previous = file.read_text(encoding="utf-8") if file.exists() else None
        overrides = read_overrides(file)
    except (OSError, ConfigError) as exc:
        raise SteeringError(400, "invalid_config", str(exc)) from None
    old = _policy(gateway, route)
    overrides.setdefault(route, {}).update(change)
    try:
        _write_overrides(file, overrides)
    except OSError as exc:
        raise SteeringError(500, "write_failed", f"cannot write {file}: {exc.strerror}") from None
    try:
        reload_gateway(gateway)
    except (ConfigError, MappingError) as exc:
        _restore(file, previous)
        raise SteeringError(400, "invalid_config", str(exc)) from None
    new = _policy(gateway, route)
    stamp = at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for key in change:
        audit.record(
            {
                "time": stamp,
                "who": who,
                "route": route,
                "setting": key,
                "old": old[key],
                "new": new[key],
            }
        )
    log.info("console: route %s migration %s by %s", route, ", ".join(change), who)
    return {"route": route, "old": old, "new": new}


def _restore(file: Path, previous: str | None) -> None:
    try:
        if previous is None:
            file.unlink(missing_ok=True)
        else:
            file.write_text(previous, encoding="utf-8")
    except OSError as exc:
        log.error("cannot restore the override file %s: %s", file, exc.strerror)
