"""The jambonz WebSocket client connection: socket I/O only, no protocol rules.

Opens the socket the way the feature-server does (subprotocol `ws.jambonz.org`, a short handshake
timeout, URL fragment stripped), sends JSON frames and hands received text to the caller.
"""

from __future__ import annotations

import ssl as ssl_lib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urldefrag

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from bridge import jsontext
from bridge.voicegateway.wire import SUBPROTOCOL

# jambonz accepts 24 KiB frames from apps; we are the receiver here, and apps send large verb
# arrays (SSML prompts), so accept more.
MAX_FRAME_BYTES = 1024 * 1024


class UpstreamConnectError(Exception):
    """The Voice Gateway endpoint could not be reached; `kind` is a bounded metric label."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class VoiceGatewaySocket:
    """One call's socket to the Voice Gateway endpoint."""

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection

    @property
    def close_code(self) -> int | None:
        return self._connection.close_code

    async def send_messages(self, messages: list[dict[str, Any]]) -> None:
        """Send each message as one JSON text frame, in order."""
        for message in messages:
            await self._connection.send(jsontext.dumps(message))

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the socket is closed."""
        try:
            return await self._connection.recv()
        except ConnectionClosed:
            return None

    async def close(self, code: int = 1000) -> None:
        await self._connection.close(code)


async def open_socket(
    url: str, *, timeout_s: float, ssl: ssl_lib.SSLContext | None = None
) -> VoiceGatewaySocket:
    """Connect to a jambonz WS app; raise UpstreamConnectError with a bounded kind.

    `ssl` is used for wss:// URLs (None: the system defaults). Error details never carry the
    URL: its path is often the endpoint's secret.
    """
    target, _fragment = urldefrag(url)
    # websockets refuses `ssl` on ws:// and `ssl=None` on wss://.
    tls: dict[str, Any] = (
        {"ssl": ssl} if ssl is not None and target.lower().startswith("wss://") else {}
    )
    try:
        connection = await connect(
            target,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            open_timeout=timeout_s,
            max_size=MAX_FRAME_BYTES,
            compression=None,
            ping_interval=None,
            proxy=None,
            user_agent_header="acvg-bridge",
            **tls,
        )
    except TimeoutError as exc:
        raise UpstreamConnectError("timeout", "handshake timed out") from exc
    except InvalidURI:
        raise UpstreamConnectError("bad_url", "invalid WebSocket URL") from None
    except InvalidHandshake as exc:
        raise UpstreamConnectError("handshake", str(exc)) from exc
    except ssl_lib.SSLError as exc:
        raise UpstreamConnectError("tls", exc.reason or type(exc).__name__) from None
    except OSError as exc:
        raise UpstreamConnectError("connect", exc.strerror or type(exc).__name__) from exc
    return VoiceGatewaySocket(connection)


def socket_opener(
    ssl: ssl_lib.SSLContext | None,
) -> Callable[[str, float], Awaitable[VoiceGatewaySocket]]:
    """An opener (`vg_path.SocketOpener`) that uses `ssl` for wss:// upstreams."""

    async def open_with_context(url: str, timeout_s: float) -> VoiceGatewaySocket:
        return await open_socket(url, timeout_s=timeout_s, ssl=ssl)

    return open_with_context


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
        cause = error.__cause__
        if isinstance(cause, InvalidStatus):
            status = cause.response.status_code
            if 400 <= status < 500:
                return frozenset({"4xx"})
            if 500 <= status < 600:
                return frozenset({"5xx"})
        return frozenset({"other"})
    return frozenset()


def should_retry(error: UpstreamConnectError, options: ReconnectOptions) -> bool:
    classes = retry_classes(error)
    return bool(classes) and ("all" in options.retry_on or bool(classes & options.retry_on))
