"""The console and admin API across a fleet: apply what other instances announce on the control
plane (bridge/control.py), and announce this instance's changes. Nothing without a shared store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from bridge.app import Gateway, GatewayKey
from bridge.console.steering import AuditLog
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
            overrides = await control.overrides()
            if overrides is not None and apply_fleet_overrides(gateway, overrides):
                log.info("migration settings changed by the fleet")
            log_to: AuditLog = audit(gateway)
            for entry in message.get("audit") or []:
                if isinstance(entry, dict):
                    log_to.record(entry)

        task = asyncio.create_task(control.listen(apply))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context
