"""The migration plans at run time: the loop that ticks them, and `/admin/plan`.

`plan_loop` ticks the gateway's `Rollout` (bridge/rollout.py) once a second and tells the fleet
of what a tick changed (`announce_steering`, like a console change). With a cluster only the
leader ticks: the instance holding the Redis lock `acvg:plan:leader` (renewed every tick, gone
`LEADER_TTL_S` after its holder stopped), so one instance decides and every instance applies
the change through the control plane.

`GET /admin/plan?route=R`: the plan's state (step, since, last verdict with each gate's figures,
history); without `route`, every plan. `POST /admin/plan?route=R` `{"action": "approve"}`
promotes a step that waits for approval (`approve: manual`), `{"action": "resume"}` lets a
rolled-back plan go on. Both need the admin token (the console's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from bridge.app import Gateway, GatewayKey
from bridge.console.fleet import announce_steering
from bridge.console.steering import AuditLog, SteeringError, steer
from bridge.rollout import PLAN_WHO, Rollout, RolloutError
from bridge.store import RedisStore

__all__ = ["LEADER_KEY", "RolloutKey", "get_plan", "plan_loop", "post_plan", "rollout_for"]

log = logging.getLogger("bridge.rollout")
TICK_S = 1.0
LEADER_KEY = "acvg:plan:leader"
LEADER_TTL_S = 5.0
ACTIONS = ("approve", "resume")

RolloutKey = web.AppKey("rollout", Rollout)


def rollout_for(app: web.Application, audit: Any) -> Rollout:
    """The app's Rollout, made on first use; `audit(gateway)` gives the audit log."""
    if RolloutKey not in app:
        gateway = app[GatewayKey]

        def act(route: str, change: dict[str, Any]) -> str | None:
            try:
                steer(
                    gateway,
                    route,
                    change,
                    who=PLAN_WHO,
                    audit=audit(gateway),
                    at=datetime.fromtimestamp(rollout.clock(), UTC),
                )
            except SteeringError as exc:
                return exc.message
            return None

        rollout = Rollout(gateway, lambda: audit(gateway), act)
        app[RolloutKey] = rollout
    return app[RolloutKey]


async def _is_leader(gateway: Gateway) -> bool:
    store = gateway.cluster.store
    if not isinstance(store, RedisStore):
        return True
    me = gateway.cluster.instance_id
    ttl_ms = int(LEADER_TTL_S * 1000)
    try:
        client = store.client
        if await client.set(LEADER_KEY, me, nx=True, px=ttl_ms):
            log.info("this instance now runs the migration plans")
            return True
        holder = await client.get(LEADER_KEY)
        if isinstance(holder, bytes):
            holder = holder.decode()
        if holder == me:
            await client.pexpire(LEADER_KEY, ttl_ms)
            return True
    except (RedisError, OSError):
        return False  # no lock, no decisions: a plan waits rather than two instances acting
    return False


async def _tick(app: web.Application, audit: Any) -> None:
    gateway = app[GatewayKey]
    rollout = rollout_for(app, audit)
    if not rollout.names() or not await _is_leader(gateway):
        return
    rollout.tick()
    if rollout.changed:
        await announce_steering(gateway, audit(gateway), rollout.changed)


def plan_loop(audit: Any) -> Any:
    """A cleanup context ticking the plans every `TICK_S` (module doc)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    await _tick(app, audit)
                except Exception:  # a plan must never take the bridge down
                    log.exception("migration plan tick failed")
                await asyncio.sleep(TICK_S)

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


async def get_plan(request: web.Request, gateway: Gateway, rollout: Rollout) -> web.Response:
    route = request.query.get("route")
    try:
        if route is None:
            body: dict[str, Any] = {"plans": [rollout.describe(name) for name in rollout.names()]}
        else:
            body = rollout.describe(route)
    except RolloutError as exc:
        return _error(exc.status, exc.code, exc.message)
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def post_plan(
    request: web.Request, gateway: Gateway, rollout: Rollout, audit: AuditLog
) -> web.Response:
    route = request.query.get("route")
    if route is None:
        return _error(400, "bad_request", "route: name the route, /admin/plan?route=NAME")
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "bad_request", "the body is not JSON")
    action = body.get("action") if isinstance(body, dict) else None
    if action not in ACTIONS:
        return _error(400, "bad_request", 'action: must be "approve" or "resume"')
    try:
        described = rollout.approve(route) if action == "approve" else rollout.resume(route)
    except RolloutError as exc:
        return _error(exc.status, exc.code, exc.message)
    audit.record(
        {
            "time": described["since"],
            "who": "admin",
            "route": route,
            "setting": "plan",
            "decision": "approved" if action == "approve" else "resumed",
            "old": None,
            "new": described["step"],
        }
    )
    await announce_steering(gateway, audit, rollout.changed + 1)
    return web.json_response({"status": "done", **described})
