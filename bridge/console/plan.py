"""The migration plans at run time: the loop that ticks them, and `/admin/plan`.

`plan_loop` ticks the gateway's `Rollout` (bridge/rollout.py) once a second and tells the fleet
of what a tick changed (`announce_steering`, like a console change). With a cluster only the
leader ticks, on the fleet's evidence (bridge/console/plan_fleet.py), so one instance decides and
every instance applies the change through the control plane.

`GET /admin/plan?route=R`: the plan's state (step, since, last verdict with each gate's figures,
history); without `route`, every plan. `POST /admin/plan?route=R` `{"action": "approve"}`
promotes a step that waits for approval (`approve: manual`), `{"action": "resume"}` lets a
rolled-back plan go on. Both need the admin token (the console's); on an instance that is not
the leader they are passed on to the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from bridge.app import Gateway, GatewayKey
from bridge.console.fleet import announce_steering
from bridge.console.plan_fleet import PlanFleet
from bridge.console.steering import AuditLog, SteeringError, steer
from bridge.rollout import PLAN_WHO, Rollout, RolloutError
from bridge.store import RedisStore

__all__ = [
    "PlanFleetKey",
    "RolloutKey",
    "get_plan",
    "plan_loop",
    "post_plan",
    "prepare",
    "rollout_for",
    "tick_once",
]

log = logging.getLogger("bridge.rollout")
TICK_S = 1.0
FORWARD_TIMEOUT_S = 5.0
ACTIONS = ("approve", "resume")
ADMIN_WHO = "admin"  # `who` in the audit log for the admin token, as for console changes

RolloutKey = web.AppKey("rollout", Rollout)
PlanFleetKey = web.AppKey("plan_fleet", PlanFleet)


def prepare(app: web.Application, audit: Any) -> None:
    """Make the app's Rollout and, with a shared store, its PlanFleet (before the app starts)."""
    rollout_for(app, audit)
    gateway = app[GatewayKey]
    store = gateway.cluster.store
    if isinstance(store, RedisStore) and PlanFleetKey not in app:
        # counted like every other failed store operation (acvg_store_errors_total{op})
        app[PlanFleetKey] = PlanFleet(
            store.client, gateway.cluster.instance_id, gateway.cluster._store_error
        )


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


def _fleet(app: web.Application) -> PlanFleet | None:
    return app.get(PlanFleetKey)


async def tick_once(app: web.Application, audit: Any) -> None:
    """One round of the plans (module doc); the loop's body, and the tests' handle."""
    gateway = app[GatewayKey]
    rollout = rollout_for(app, audit)
    names = rollout.names()
    if not names:
        return
    fleet = _fleet(app)
    if fleet is None:
        rollout.tick()
    else:
        states = await fleet.states()
        if states is not None:
            rollout.follow(states)
        rollout.leader = await fleet.lead()
        evidence = gateway.metrics.evidence
        mine = {
            name: (epoch, evidence.window(name))
            for name in names
            if (epoch := rollout.epoch(name)) is not None
        }
        await fleet.share(mine)
        if not rollout.leader:
            return
        live = [peer.id for peer in gateway.cluster.peers if not peer.draining]
        windows = {}
        for name, (epoch, _) in mine.items():
            window = await fleet.fleet_window(name, epoch, live)
            if window is not None:
                windows[name] = window
        rollout.tick(windows)
        await fleet.publish_states({name: rollout.describe(name) for name in names})
    if rollout.changed:
        await announce_steering(gateway, audit(gateway), rollout.changed)


def plan_loop(audit: Any) -> Any:
    """A cleanup context ticking the plans every `TICK_S` (module doc)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async def run_plans() -> None:
            while True:
                try:
                    await tick_once(app, audit)
                except Exception:  # a plan must never take the bridge down
                    log.exception("migration plan tick failed")
                await asyncio.sleep(TICK_S)

        task = asyncio.create_task(run_plans())
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
    if not rollout.leader:
        return await _to_leader(request, gateway, body)
    try:
        if action == "approve":
            described = rollout.approve(route, ADMIN_WHO)
        else:
            described = rollout.resume(route, ADMIN_WHO)
    except RolloutError as exc:
        return _error(exc.status, exc.code, exc.message)
    await announce_steering(gateway, audit, rollout.changed)
    return web.json_response({"status": "done", **described})


async def _to_leader(request: web.Request, gateway: Gateway, body: Any) -> web.Response:
    """Pass an operator's action on to the instance that runs the plans."""
    fleet = _fleet(request.app)
    leader = fleet.leader_id if fleet is not None else None
    peer = next((p for p in gateway.cluster.peers if p.id == leader), None)
    if peer is None:
        return _error(503, "no_leader", "no instance runs the plans now (is Redis up?); retry")
    url = f"{peer.advertise_url.rstrip('/')}/admin/plan"
    headers = {"Authorization": request.headers.get("Authorization", "")}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)) as http,
            http.post(url, params=request.query, json=body, headers=headers) as reply,
        ):
            payload = await reply.read()
            return web.Response(body=payload, status=reply.status, content_type="application/json")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _error(503, "leader_unreachable", f"the plans' leader did not answer: {exc}")
