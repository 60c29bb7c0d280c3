"""The console and admin API across a fleet: apply what other instances announce on the control
plane (bridge/control.py), and announce this instance's changes. Nothing without a shared store.

On every (re)subscription an instance takes the fleet's overrides; when Redis has lost them
(restarted empty, flushed) it offers its own override file's content back first (control.py says
which instance's wins; `restore_audit` how the restore is recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bridge.app import Gateway, GatewayKey
from bridge.console.steering import AuditLog
from bridge.control import ControlPlane
from bridge.errors import ConfigError, MappingError
from bridge.reload import Overrides, apply_overrides, overrides_path, read_overrides
from bridge.reload import write_overrides as _write_overrides
from bridge.transport.admin import reload_gateway

log = logging.getLogger("bridge.console")


def apply_fleet_overrides(gateway: Gateway, overrides: Overrides) -> bool:
    """Make the fleet's overrides this instance's: its override file, then the atomic reload
    (or, without a config file, the swap). Returns whether anything changed; a document this
    instance's config cannot take changes nothing here (logged)."""
    path = gateway.config_path
    try:
        if path is None:
            updated = apply_overrides(gateway.config, overrides)
            if updated == gateway.config:
                return False
            gateway.swap(updated, gateway.engine)
            return True
        file = overrides_path(path)
        if read_overrides(file) == overrides:
            return False
        previous = file.read_text(encoding="utf-8") if file.exists() else None
        _write_overrides(file, overrides)
        try:
            reload_gateway(gateway)
        except (ConfigError, MappingError):
            if previous is None:
                file.unlink(missing_ok=True)
            else:
                file.write_text(previous, encoding="utf-8")
            raise
    except (ConfigError, MappingError, OSError) as exc:
        log.error("the fleet's migration overrides do not apply here: %s", exc)
        return False
    return True


async def announce_steering(gateway: Gateway, audit: AuditLog, changed: int) -> None:
    """After a console change here: the fleet takes this instance's overrides and audit lines."""
    control = gateway.cluster.control
    if control is None or gateway.config_path is None:
        return
    try:
        overrides = read_overrides(overrides_path(gateway.config_path))
    except ConfigError:
        return
    await control.publish_overrides(overrides, list(reversed(audit.recent(changed))))


def own_overrides(gateway: Gateway) -> Overrides:
    """This instance's override file's settings (none without a config file or when the file
    cannot be read), routes without a setting left out."""
    if gateway.config_path is None:
        return {}
    try:
        overrides = read_overrides(overrides_path(gateway.config_path))
    except ConfigError as exc:
        log.error("cannot offer this instance's overrides to the fleet: %s", exc)
        return {}
    return {route: dict(values) for route, values in overrides.items() if values}


def restore_audit(overrides: Overrides, instance_id: str, at: datetime) -> list[dict[str, Any]]:
    """The audit lines of a restore: one per setting, as for a console change, `who` naming the
    instance whose file the fleet now follows; `old` is none (what Redis lost is not known)."""
    stamp = at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return [
        {
            "time": stamp,
            "who": f"restore by instance {instance_id}",
            "route": route,
            "setting": setting,
            "old": None,
            "new": value,
            "reason": "restored: the fleet's overrides were missing from Redis",
        }
        for route, values in sorted(overrides.items())
        for setting, value in sorted(values.items())
    ]


async def sync_fleet_overrides(
    gateway: Gateway, control: ControlPlane, audit: AuditLog
) -> Overrides | None:
    """After a (re)subscription: the fleet's overrides, this instance's put back first when
    Redis has none (see control.py `sync_overrides`)."""
    own = own_overrides(gateway)
    instance_id = gateway.cluster.instance_id
    entries = restore_audit(own, instance_id, datetime.now(UTC))
    overrides, restored = await control.sync_overrides(own, entries)
    if restored:
        log.warning(
            "the fleet's migration overrides were missing from Redis (restarted empty or "
            "flushed): instance %s restored them from its override file; the fleet follows it",
            instance_id,
        )
        for entry in entries:
            audit.record(entry)
    return overrides


def fleet_sync(audit: Any) -> Any:
    """A cleanup context that follows the fleet's announcements; `audit(gateway)` gives the
    audit log their lines go to."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        gateway = app[GatewayKey]
        control = gateway.cluster.control
        if control is None:
            yield
            return

        async def apply(op: str, message: dict[str, Any]) -> None:
            if op == "reload":
                try:
                    reload_gateway(gateway)
                    log.info("reloaded: another instance asked the fleet to")
                except (ConfigError, MappingError) as exc:
                    log.error("fleet reload rejected here: %s", exc)
                return
            log_to: AuditLog = audit(gateway)
            if op == "sync":
                overrides = await sync_fleet_overrides(gateway, control, log_to)
            else:
                overrides = await control.overrides()
            if overrides is not None and apply_fleet_overrides(gateway, overrides):
                if message.get("restored"):
                    log.warning(
                        "migration settings changed by the fleet: instance %s restored the "
                        "fleet's overrides from its override file",
                        message.get("from"),
                    )
                else:
                    log.info("migration settings changed by the fleet")
            for entry in message.get("audit") or []:
                if isinstance(entry, dict):
                    log_to.record(entry)

        task = asyncio.create_task(control.listen(apply))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context
