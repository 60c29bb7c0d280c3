"""The admin HTTP endpoints (design §2.2, §2.5, §3.6): `POST /admin/reload`, `GET /admin/routes`,
`GET /admin/cluster`.

Both need `Authorization: Bearer <admin_token>`; without an admin token in the config the admin
API is off (403). A reload builds the whole new state first and swaps it in one step, so an
invalid file changes nothing; calls in flight keep the route and engine they started with.
Rejections are counted in `acvg_rejected_requests_total` under the route label `_admin`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bridge.app import Gateway, GatewayKey
from bridge.errors import ConfigError, MappingError
from bridge.numbers import redact
from bridge.reload import State, check_reloadable, describe_routes, load_state

__all__ = ["ADMIN_ROUTE", "add_admin_routes", "reload_gateway"]

log = logging.getLogger("bridge.admin")
ADMIN_ROUTE = "_admin"

AdminHandler = Callable[[web.Request, Gateway], Awaitable[web.Response]]


def reload_gateway(gateway: Gateway) -> State:
    """Re-read the gateway's config file and swap config and engine in; the SIGHUP path too.

    Raises ConfigError or MappingError and leaves the gateway untouched when the file, a mapping
    or the change itself (a different `listen`) is invalid. Synchronous on purpose: with no await
    between reading and swapping, two reloads cannot interleave.
    """
    path = gateway.config_path
    if path is None:
        raise ConfigError("(file)", "no config file to reload")
    state = load_state(path, listen_override=gateway.listen_override)
    check_reloadable(gateway.config, state.config, file=str(path))
    gateway.swap(state.config, state.engine)
    return state


def _reject(gateway: Gateway, status: int, reason: str, message: str) -> web.Response:
    gateway.metrics.rejected_requests.labels(ADMIN_ROUTE, reason).inc()
    return web.json_response({"error": reason, "message": message}, status=status)


def _bearer(request: web.Request) -> str | None:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return presented.strip() if scheme.lower() == "bearer" else None


def _admin_only(handler: AdminHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def wrapped(request: web.Request) -> web.Response:
        gateway = request.app[GatewayKey]
        token = gateway.config.admin_token
        if not token:
            return _reject(gateway, 403, "admin_disabled", "admin API disabled")
        presented = _bearer(request)
        if presented is None or not hmac.compare_digest(presented.encode(), token.encode()):
            return _reject(gateway, 401, "auth", "missing or invalid admin bearer token")
        return await handler(request, gateway)

    return wrapped


async def reload(request: web.Request, gateway: Gateway) -> web.Response:
    if gateway.config_path is None:
        return _reject(gateway, 409, "no_config_file", "no config file to reload")
    try:
        state = reload_gateway(gateway)
    except (ConfigError, MappingError) as exc:
        log.warning("config reload rejected: %s", redact(str(exc)))
        return _reject(gateway, 400, "invalid_config", str(exc))
    log.info("config reloaded: %d route(s)", len(state.config.routes))
    if gateway.cluster.control is not None:  # every instance reloads its own file too
        await gateway.cluster.control.publish_reload()
    return web.json_response({"status": "reloaded", **describe_routes(state.config)})


async def routes(request: web.Request, gateway: Gateway) -> web.Response:
    return web.json_response(describe_routes(gateway.config))


async def cluster(request: web.Request, gateway: Gateway) -> web.Response:
    return web.json_response(await gateway.cluster.status())


def add_admin_routes(app: web.Application) -> None:
    """Register the admin endpoints on an app that holds a `GatewayKey`."""
    app.add_routes(
        [
            web.post("/admin/reload", _admin_only(reload)),
            web.get("/admin/routes", _admin_only(routes)),
            web.get("/admin/cluster", _admin_only(cluster)),
        ]
    )
