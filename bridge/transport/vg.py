"""The jambonz WebSocket client connection: socket I/O only, no protocol rules.

Opens the socket the way the feature-server does (subprotocol `ws.jambonz.org`, a short handshake
timeout, URL fragment stripped), sends JSON frames and hands received text to the caller.

Built on aiohttp's client WebSocket (C frame reader and masking: less CPU per turn than the
`websockets` client it replaced). A `VoiceGatewayClient` holds the one aiohttp session the call
sockets of a gateway share. Close codes are reported as RFC 6455 §7.1.5 defines them (and as
`websockets` did): None while open, then the code of the peer's close frame (1005 when it carried
none), 1006 when the connection ended without one.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_lib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urldefrag, urljoin, urlparse

import aiohttp
from aiohttp import WSMsgType, hdrs

from bridge import jsontext
from bridge.voicegateway.wire import SUBPROTOCOL

# jambonz accepts 24 KiB frames from apps; we are the receiver here, and apps send large verb
# arrays (SSML prompts), so accept more.
MAX_FRAME_BYTES = 1024 * 1024
MAX_REDIRECTS = 10  # what `websockets` followed
CLOSE_TIMEOUT_S = 10.0  # how long close() waits for the peer's close frame
USER_AGENT = "acvg-bridge"
NO_STATUS_RECEIVED = 1005
ABNORMAL_CLOSURE = 1006


class UpstreamConnectError(Exception):
    """The Voice Gateway endpoint could not be reached; `kind` is a bounded metric label.

    `status` is the HTTP status of a refused upgrade (kind `handshake`), else None.
    """

    def __init__(self, kind: str, detail: str, *, status: int | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.status = status


class VoiceGatewaySocket:
    """One call's socket to the Voice Gateway endpoint.

    `session`, when given, is the socket's own aiohttp session, closed with the socket.
    """

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession | None = None
    ) -> None:
        self._ws = ws
        self._session = session
        self._close_code: int | None = None
        self._closing = False

    @property
    def close_code(self) -> int | None:
        return self._close_code

    async def send_messages(self, messages: list[dict[str, Any]]) -> None:
        """Send each message as one JSON text frame, in order."""
        for message in messages:
            await self._ws.send_str(jsontext.dumps(message))

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the socket is closed."""
        if self._close_code is not None or self._closing:
            return None
        msg = await self._ws.receive()  # pings are answered and pongs dropped inside
        if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
            data: str | bytes = msg.data
            return data
        if msg.type is WSMsgType.CLOSING:  # close() runs in another task; it sets the code
            return None
        if msg.type is WSMsgType.CLOSE:  # the peer's close frame: echo its code (RFC 6455 §5.5.1)
            code = int(msg.data) or NO_STATUS_RECEIVED
            await self._ws.close(code=code if code != NO_STATUS_RECEIVED else 1000)
        elif msg.type is WSMsgType.ERROR:  # a protocol error: aiohttp sent its close code
            code = self._ws.close_code or ABNORMAL_CLOSURE
        else:  # CLOSED: the connection ended without a close frame
            code = ABNORMAL_CLOSURE
        await self._closed(code)
        return None

    async def close(self, code: int = 1000) -> None:
        """Send a close frame with `code` and wait (bounded) for the peer's."""
        if self._close_code is not None or self._closing:
            return
        self._closing = True
        try:
            await self._ws.close(code=code)
        finally:
            received = self._ws.close_code
            await self._closed(
                ABNORMAL_CLOSURE if received is None else received or NO_STATUS_RECEIVED
            )

    async def _closed(self, code: int) -> None:
        self._close_code = code
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _client_session(ssl: ssl_lib.SSLContext | None) -> aiohttp.ClientSession:
    """A session for call sockets: no limit on connections (each call holds one for its whole
    length), no keep-alive pool (an upgraded connection is never reused), no cookie jar shared
    between calls, no proxy from the environment, no timeout but the handshake's own."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=0, limit_per_host=0, force_close=True, ssl=ssl if ssl is not None else True
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(),
        headers={hdrs.USER_AGENT: USER_AGENT},
        skip_auto_headers=(hdrs.ACCEPT, hdrs.ACCEPT_ENCODING),
        trust_env=False,
    )


class VoiceGatewayClient:
    """Opens the Voice Gateway sockets of one gateway (a `vg_path.SocketOpener`).

    All sockets share one aiohttp session, made by `start()` (or on first use) with `ssl` for
    wss:// upstreams (None: the system defaults); `close()` closes it and any socket still open.
    """

    def __init__(self, ssl: ssl_lib.SSLContext | None) -> None:
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def start(self) -> None:
        if self._session is None and not self._closed:
            self._session = _client_session(self._ssl)

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __call__(self, url: str, timeout_s: float) -> VoiceGatewaySocket:
        await self.start()
        if self._session is None:
            raise UpstreamConnectError("connect", "the Voice Gateway client is closed")
        return await open_socket(url, timeout_s=timeout_s, session=self._session)


async def open_socket(
    url: str,
    *,
    timeout_s: float,
    ssl: ssl_lib.SSLContext | None = None,
    session: aiohttp.ClientSession | None = None,
) -> VoiceGatewaySocket:
    """Connect to a jambonz WS app; raise UpstreamConnectError with a bounded kind.

    `timeout_s` bounds the whole opening: DNS, TCP, TLS, the upgrade and its redirects. Without
    `session` the socket gets a session of its own with `ssl` for wss:// URLs (None: the system
    defaults); with one, the session's connector decides. Error details never carry the URL:
    its path is often the endpoint's secret.
    """
    owned = None
    if session is None:
        session = owned = _client_session(ssl)
    try:
        async with asyncio.timeout(timeout_s):
            ws = await _connect(urldefrag(url)[0], session)
    except BaseException as exc:
        if owned is not None:
            await owned.close()
        if isinstance(exc, TimeoutError):  # asyncio's; aiohttp's own timeouts are mapped below
            raise UpstreamConnectError("timeout", "handshake timed out") from exc
        raise
    return VoiceGatewaySocket(ws, owned)


async def _connect(target: str, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
    """The upgraded connection to `target`, following redirects as `websockets` did."""
    for _ in range(MAX_REDIRECTS + 1):
        secure = _checked_scheme(target) == "wss"
        try:
            ws = await session.ws_connect(
                target,
                protocols=(SUBPROTOCOL,),
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S),
                autoclose=False,  # receive() answers the peer's close frame with its code
                autoping=True,
                heartbeat=None,
                max_msg_size=MAX_FRAME_BYTES + 1,  # aiohttp refuses messages of this size
                compress=0,
                proxy=None,
            )
        except aiohttp.NonHttpUrlRedirectClientError as exc:  # aiohttp follows http(s):// only
            location = urldefrag(urljoin(target, str(exc.args[0])))[0]
            if secure and urlparse(location).scheme != "wss":
                raise UpstreamConnectError("handshake", "redirect to a non-secure URI") from None
            target = location
            continue
        except Exception as exc:
            raise _connect_error(exc) from _cause(exc)
        await _check_handshake(ws, secure)
        return ws
    raise UpstreamConnectError("handshake", f"more than {MAX_REDIRECTS} redirects")


def _checked_scheme(target: str) -> str:
    """The scheme of `target` if it is a WebSocket URL `websockets` would open."""
    try:
        parsed = urlparse(target)
        parsed.port  # noqa: B018  (raises ValueError when out of range)
    except ValueError:
        raise UpstreamConnectError("bad_url", "invalid WebSocket URL") from None
    if (
        parsed.scheme not in ("ws", "wss")
        or not parsed.hostname
        or (parsed.username is not None and parsed.password is None)
    ):
        raise UpstreamConnectError("bad_url", "invalid WebSocket URL")
    return parsed.scheme


async def _check_handshake(ws: aiohttp.ClientWebSocketResponse, secure: bool) -> None:
    """Refuse what `websockets` refused and aiohttp lets through: a subprotocol or extension we
    did not offer, a wss:// URL redirected to plain HTTP."""
    response = ws._response  # no public accessor for the upgrade response's headers
    problem = None
    if ws.protocol is None and hdrs.SEC_WEBSOCKET_PROTOCOL in response.headers:
        problem = "unsupported subprotocol"
    elif hdrs.SEC_WEBSOCKET_EXTENSIONS in response.headers:
        problem = "unsupported extension"
    elif secure and ws.get_extra_info("ssl_object") is None:
        problem = "redirect to a non-secure URI"
    if problem is not None:
        response.close()  # as a failed handshake: drop the connection, no close frame
        raise UpstreamConnectError("handshake", problem)


def _connect_error(exc: Exception) -> UpstreamConnectError:
    """The bounded kind of a failed opening (details without the URL)."""
    if isinstance(exc, TimeoutError):  # aiohttp's own connect and read timeouts
        return UpstreamConnectError("timeout", "handshake timed out")
    if isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status != 101:
        detail = f"server rejected WebSocket connection: HTTP {exc.status}"
        return UpstreamConnectError("handshake", detail, status=exc.status)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):  # before ValueError: it is one
        return _tls_error(exc.certificate_error)
    if isinstance(exc, ssl_lib.SSLError):  # aiohttp.ClientConnectorSSLError is one
        return _tls_error(exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, no such host
        error = exc.os_error
        return UpstreamConnectError("connect", error.strerror or type(error).__name__)
    if isinstance(exc, ValueError):  # aiohttp.InvalidURL, yarl's refusals
        return UpstreamConnectError("bad_url", "invalid WebSocket URL")
    if isinstance(exc, aiohttp.ClientResponseError):  # a bad upgrade response
        return UpstreamConnectError("handshake", exc.message or type(exc).__name__)
    if isinstance(exc, aiohttp.ClientError):  # connected, but no upgrade response came back
        return UpstreamConnectError("handshake", type(exc).__name__)
    if isinstance(exc, OSError):
        return UpstreamConnectError("connect", exc.strerror or type(exc).__name__)
    return UpstreamConnectError("handshake", type(exc).__name__)


def _tls_error(error: BaseException) -> UpstreamConnectError:
    return UpstreamConnectError("tls", getattr(error, "reason", None) or type(error).__name__)


def _cause(exc: Exception) -> BaseException | None:
    """What a connect error is chained to: the OS error under aiohttp's wrapper (it names only
    host and port), never an exception whose text carries the URL."""
    if isinstance(exc, aiohttp.ClientConnectorError) and not isinstance(exc, ssl_lib.SSLError):
        return exc.os_error
    if isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError):
        return exc
    return None


def socket_opener(ssl: ssl_lib.SSLContext | None) -> VoiceGatewayClient:
    """An opener (`vg_path.SocketOpener`) that uses `ssl` for wss:// upstreams; its owner starts
    and closes it with the gateway (bridge/app.py)."""
    return VoiceGatewayClient(ssl)


# ---- reconnecting (voicegateway-ws.md §1.1: URL fragment `#rc=N&rp=...`, backoff) -----------

MAX_RECONNECTS = 5  # feature-server's default and the most `#rc=` may ask for
_RETRY_CLASSES = frozenset({"ct", "rt", "4xx", "5xx", "all"})


@dataclass(frozen=True, slots=True)
class ReconnectOptions:
    """What a call's URL fragment says about reconnecting (`#rc=<1..5>&rp=<classes>`)."""

    max_reconnects: int = MAX_RECONNECTS
    retry_on: frozenset[str] = frozenset({"ct"})  # ct: refused / timed out / reset


def reconnect_options(url: str) -> ReconnectOptions:
    """Parse the fragment of `url`; unknown or out-of-range values keep the defaults."""
    fragment = urldefrag(url).fragment
    options = parse_qs(fragment, keep_blank_values=False)
    max_reconnects = MAX_RECONNECTS
    rc = options.get("rc", [])
    if rc and rc[-1].isdigit() and 1 <= int(rc[-1]) <= MAX_RECONNECTS:
        max_reconnects = int(rc[-1])
    classes = {c.strip().lower() for value in options.get("rp", []) for c in value.split(",")}
    retry_on = frozenset(classes & _RETRY_CLASSES) or frozenset({"ct"})
    return ReconnectOptions(max_reconnects, retry_on)


def next_backoff(delay_s: float) -> float:
    """feature-server's backoff step: double up to 2 s, then add 2 s each time."""
    return delay_s * 2 if delay_s < 2.0 else delay_s + 2.0


def retry_classes(error: UpstreamConnectError) -> frozenset[str]:
    """The `rp` classes a failed connection attempt belongs to (empty: never retried)."""
    if error.kind == "connect":
        return frozenset({"ct"})
    if error.kind == "timeout":  # the TCP connect or the upgrade response did not come in time
        return frozenset({"ct", "rt"})
    if error.kind == "handshake":
        status = error.status
        if status is not None and 400 <= status < 500:
            return frozenset({"4xx"})
        if status is not None and 500 <= status < 600:
            return frozenset({"5xx"})
        return frozenset({"other"})
    return frozenset()


def should_retry(error: UpstreamConnectError, options: ReconnectOptions) -> bool:
    classes = retry_classes(error)
    return bool(classes) and ("all" in options.retry_on or bool(classes & options.retry_on))
