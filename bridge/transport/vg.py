"""The jambonz WebSocket client connection: socket I/O only, no protocol rules.

Opens the socket the way the feature-server does (subprotocol `ws.jambonz.org`, a short handshake
timeout, URL fragment stripped), sends JSON frames and hands received text to the caller.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urldefrag

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

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
            await self._connection.send(json.dumps(message, separators=(",", ":")))

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the socket is closed."""
        try:
            return await self._connection.recv()
        except ConnectionClosed:
            return None

    async def close(self, code: int = 1000) -> None:
        await self._connection.close(code)


async def open_socket(url: str, *, timeout_s: float) -> VoiceGatewaySocket:
    """Connect to a jambonz WS app; raise UpstreamConnectError with a bounded kind."""
    target, _fragment = urldefrag(url)
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
        )
    except TimeoutError as exc:
        raise UpstreamConnectError("timeout", "handshake timed out") from exc
    except InvalidURI as exc:
        raise UpstreamConnectError("bad_url", str(exc)) from exc
    except InvalidHandshake as exc:
        raise UpstreamConnectError("handshake", str(exc)) from exc
    except OSError as exc:
        raise UpstreamConnectError("connect", exc.strerror or type(exc).__name__) from exc
    return VoiceGatewaySocket(connection)
