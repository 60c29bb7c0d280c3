"""Requests aiohttp's HTTP parser refuses: a JSON error, a counter, one log line — no bytes.

aiohttp answers a request its parser rejects (a garbage method, `Content-Length: abc`, a control
character in a header, a request line or header field over 8190 bytes, too many headers, a bad
chunk size) before the application sees it: `text/plain` quoting the offending line, and an
ERROR with a traceback quoting it again on the `aiohttp.server` logger — a bearer token or a
caller's number in that line would reach the log. `JsonErrorRunner` answers those like every
other rejection (design §3.8): `{"error", "message"}` as JSON with a message that names the
problem and never echoes the request, counted in `acvg_rejected_requests_total` under the route
`_unknown` (the request never got as far as a route), logged once by `bridge.http` without the
bytes and without a traceback. The connection still closes after the answer, as aiohttp does.

The hook: aiohttp's `web.Server` makes one `web.RequestHandler` per connection, and a parse
error reaches `RequestHandler.handle_error` with the parser's `HttpProcessingError` and a 4xx
status; a request handler's exception arrives there with 500 (or 504) and keeps aiohttp's
answer and ERROR log. So `JsonErrorRunner` (the `web.AppRunner` of `serve` and the demo) builds
a `web.Server` subclass whose connections are `JsonErrorRequestHandler`s. Nothing global is
patched; it works the same on the standard loop and uvloop (both call the server as the
protocol factory). Two aiohttp internals are relied on, and tests/test_http_errors.py would
fail on an aiohttp that changed them: the runner hook `AppRunner._make_server`, and the
connection options a `web.Server` keeps in `_kwargs`. Which status and words a parser error
gets is `describe`, which is pure.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)

from bridge.app import GatewayKey
from bridge.transport.http import UNKNOWN_ROUTE, error_response

__all__ = ["JsonErrorRequestHandler", "JsonErrorRunner", "Rejection", "describe"]

log = logging.getLogger("bridge.http")

MALFORMED = "malformed_http"
HEADERS_TOO_LARGE = "headers_too_large"
# The parsers' own words for too many header (or trailer) lines; no exception class says it.
_TOO_MANY = frozenset({"Too many headers received", "Too many trailers received"})
# llhttp's reason phrase opens the C parser's message ("Invalid header value char:\n\n  b'…'");
# the quoted request bytes follow the first ":\n". Only plain words are taken from it: no
# digits, quotes, colons or escapes can carry a token or a number into the answer or the log.
_PLAIN_WORDS = re.compile(r"[A-Za-z][A-Za-z ,-]{0,79}")
_FALLBACK = {
    BadHttpMethod: "invalid method",
    BadStatusLine: "invalid request line",
    InvalidURLError: "invalid request target",
    InvalidHeader: "invalid header",
}

RejectionCounter = Callable[[str], None]


@dataclass(frozen=True)
class Rejection:
    """How the bridge answers one parser error: status, error code (the metric's reason)."""

    status: int
    reason: str
    message: str


def describe(exc: HttpProcessingError, *, max_headers: int) -> Rejection:
    """The answer to a request the parser refused with `exc`, in words that quote no request
    bytes. Over-long lines and too many headers are 431: aiohttp raises the same `LineTooLong`
    for the request line and for a header field, so the answer names both (as Node.js answers
    431 when either overflows its header limit); everything else is 400."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        bound = f"{limit} bytes" if limit is not None else "the size limit"
        return Rejection(
            431, HEADERS_TOO_LARGE, f"the request line or a header field is longer than {bound}"
        )
    if exc.message in _TOO_MANY:
        return Rejection(431, HEADERS_TOO_LARGE, f"more than {max_headers} header fields")
    head = exc.message.partition(":\n")[0]
    if _PLAIN_WORDS.fullmatch(head):
        detail = head[0].lower() + head[1:]
    else:
        detail = next(
            (words for kind, words in _FALLBACK.items() if isinstance(exc, kind)),
            "the request cannot be parsed",
        )
    return Rejection(400, MALFORMED, f"malformed HTTP request: {detail}")


class JsonErrorRequestHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, answering parser errors as described in the module
    doc; `count(reason)` is called once per such rejection."""

    __slots__ = ("_count",)

    def __init__(self, manager: web.Server, *, count: RejectionCounter, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._count = count

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        rejection = describe(exc, max_headers=self.max_headers)
        self._count(rejection.reason)
        # Not HTTP at all (a TLS hello, a port scanner) is routine on an open port.
        level = logging.INFO if isinstance(exc, BadHttpMethod) else logging.WARNING
        log.log(level, "refused by the HTTP parser (%s): %s", rejection.reason, rejection.message)
        response = error_response(rejection.status, rejection.reason, rejection.message)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    """A `web.Server` like the one aiohttp built, whose connections are
    `JsonErrorRequestHandler`s."""

    def __init__(self, built: web.Server, count: RejectionCounter) -> None:
        loop = asyncio.get_running_loop()
        # aiohttp keeps the connection options it was given (debug, access log, parser limits,
        # the app's handler_args) only on the server it built.
        options: dict[str, Any] = dict(built._kwargs)
        super().__init__(
            built.request_handler,
            request_factory=built.request_factory,
            handler_cancellation=built.handler_cancellation,
            loop=loop,
            **options,
        )
        self._handler_loop = loop
        self._handler_options = options
        self._count = count

    def __call__(self) -> web.RequestHandler:
        return JsonErrorRequestHandler(
            self, count=self._count, loop=self._handler_loop, **self._handler_options
        )


class JsonErrorRunner(web.AppRunner):
    """`web.AppRunner` whose server answers parser errors as JSON (module doc). Rejections
    are counted on the app's gateway metrics when the app is a gateway (`GatewayKey`)."""

    async def _make_server(self) -> web.Server:
        built = await super()._make_server()  # runs the app's startup, as AppRunner does
        gateway = self.app.get(GatewayKey)

        def count(reason: str) -> None:
            if gateway is not None:
                gateway.metrics.rejected_requests.labels(UNKNOWN_ROUTE, reason).inc()

        return _JsonErrorServer(built, count)
