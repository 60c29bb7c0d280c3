"""The bridge's access log: one short line per HTTP request, cheap, and nothing a caller sent.

aiohttp's default access logger formats an Apache line per request (peer address, `%t` local
time, the raw request line with its query string, size, referrer, user agent) that the
`RedactingFilter` (bridge/logs.py) then scrubs with regexes: ~6 % of the bridge's CPU at 100
turns/s (issue 16), and what survives is mostly `<redacted>` (status, size, address and time
are digit runs). `AccessLogger` (the `access_log_class` of `serve`) writes instead, only when
its logger is enabled for INFO:

    POST activities status=200 ms=1.4 route=support conversation=3d424860-17c1-…

Every part is from a closed set or a number the bridge formats itself, so the record carries
`SCRUBBED` and the filter passes it as it is:
- the method: one of `METHODS`, anything else `OTHER`;
- the kind of request (`kind_of`, from the pattern of the matched route, never the raw path;
  `unmatched` when no route matched): an operator counts probes, creates, turns, sockets and
  errors by kind, and the conversation's own log lines say the rest;
- the status and the duration (for a WebSocket, the socket's life);
- `route` only when it names a configured route, else `_unknown` (a 404's path is the caller's);
- `conversation` only when it is a canonical UUID (what VoiceAI Connect sends, and what the
  filter keeps elsewhere), else `<redacted>`: the id is chosen by the client, unbounded in a
  path, and could be a number. A UUID keeps the line joinable with the session's lines.
No query string, body, header (Authorization, User-Agent) or peer address is ever read.

Performs no I/O of its own; the logger's handlers write the line.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from bridge.app import GatewayKey
from bridge.logs import SCRUBBED, is_uuid
from bridge.numbers import REDACTED
from bridge.transport.http import UNKNOWN_ROUTE

__all__ = ["METHODS", "AccessLogger", "kind_of", "runner_options"]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CONV = "/ac/{route}/conversation/{conversation}"
# The matched route's pattern (aiohttp's `resource.canonical`) → kind; `/ac/{route}` is
# `probe` (GET, HEAD), `stream` (GET with Upgrade: WebSocket mode) or `create` (POST).
# tests/test_access_log.py fails for a route of the app with no kind here or under `_PREFIXES`.
_KINDS = {
    f"{_CONV}/activities": "activities",
    f"{_CONV}/refresh": "refresh",
    f"{_CONV}/disconnect": "disconnect",
    f"{_CONV}/websocket": "websocket",
    "/cluster/{route}/conversation/{cid}/handoff": "handoff",
    "/metrics": "metrics",
    "/healthz": "healthz",
    "/readyz": "readyz",
}
_PREFIXES = (("/admin/", "admin"), ("/console", "console"))
OTHER = "other"
UNMATCHED = "unmatched"


def kind_of(method: str, canonical: str | None, upgrade: bool = False) -> str:
    """The kind of a request on the route pattern `canonical` (None: no route matched);
    `upgrade`: it asked for a WebSocket."""
    if canonical is None:
        return UNMATCHED
    if canonical == "/ac/{route}":
        if method == "POST":
            return "create"
        return "stream" if upgrade else "probe"
    kind = _KINDS.get(canonical)
    if kind is not None:
        return kind
    for prefix, named in _PREFIXES:
        if canonical.startswith(prefix):
            return named
    return OTHER


class AccessLogger(AbstractAccessLogger):
    """One line per request on the runner's access logger (module doc), nothing when the
    logger is not enabled for INFO."""

    @property
    def enabled(self) -> bool:
        # aiohttp asks once per connection and then skips `log` altogether.
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        # Asked again: a keep-alive connection outlives a change of level.
        if not self.logger.isEnabledFor(logging.INFO):
            return
        try:
            method = request.method if request.method in METHODS else "OTHER"
            extra: dict[str, Any] = {SCRUBBED: True}
            canonical: str | None = None
            info = None
            if isinstance(request, web.Request):
                try:
                    info = request.match_info
                    app = info.current_app
                except (AttributeError, AssertionError):
                    info = None  # a request the parser refused: no route was looked up
            if info is not None:
                resource = info.route.resource
                canonical = None if resource is None else resource.canonical
                route = info.get("route")
                if route is not None:
                    gateway = app.get(GatewayKey)
                    known = gateway is not None and route in gateway.config.routes
                    extra["route"] = route if known else UNKNOWN_ROUTE
                conversation = info.get("conversation") or info.get("cid")
                if conversation is not None:
                    extra["conversation"] = conversation if is_uuid(conversation) else REDACTED
            upgrade = canonical == "/ac/{route}" and "Upgrade" in request.headers
            kind = kind_of(method, canonical, upgrade)
            self.logger.info(
                f"{method} {kind} status={response.status} ms={time * 1000:.1f}", extra=extra
            )
        except Exception:
            self.logger.exception("access log line failed")


def runner_options(enabled: bool) -> dict[str, Any]:
    """The `web.AppRunner` keyword arguments for the access log on (`AccessLogger` on aiohttp's
    `aiohttp.access` logger) or off (no access logger at all: nothing is called per request)."""
    if enabled:
        return {"access_log_class": AccessLogger}
    return {"access_log": None}
