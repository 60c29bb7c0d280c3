"""Simulated VAIC: AudioCodes Bot API clients (HTTP mode and text-only WebSocket mode), written
from audiocodes-bot-api.md.

VAIC is always the client. HTTP mode (§1): it probes the bot URL, creates a conversation, posts
activities, refreshes, disconnects — with `Authorization: Bearer <token>` on every request — and
may open the optional `websocketURL` to receive asynchronous activities (§1.6). Returned URLs are
resolved against the bot URL per RFC 3986, so relative, root-relative and absolute URLs all work
(§1.2). WebSocket mode (§2): one socket to the bot URL with the bearer token on the upgrade,
`session.initiate` → `session.accepted`, `activities` both ways, `session.end`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp


def resolve(bot_url: str, reference: str) -> str:
    """RFC 3986 reference resolution of a returned URL against the bot URL."""
    return urljoin(bot_url, reference)


def websocket_url(bot_url: str) -> str:
    """The `ws://`/`wss://` form of an `http://`/`https://` bot URL (others are returned as is)."""
    parts = urlsplit(bot_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit(parts._replace(scheme=scheme))


def timestamp(at: datetime) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, as every reference implementation writes it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def stamp(activity: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """A copy of `activity` with a fresh uuid `id` and a `timestamp`."""
    return {**activity, "id": str(uuid.uuid4()), "timestamp": timestamp(at)}


@dataclass(frozen=True)
class BotReply:
    """One HTTP answer from the bot: status and parsed JSON body (None when not JSON)."""

    status: int
    body: Any
    text: str = ""

    @property
    def activities(self) -> list[dict[str, Any]]:
        if isinstance(self.body, dict) and isinstance(self.body.get("activities"), list):
            return [a for a in self.body["activities"] if isinstance(a, dict)]
        return []


@dataclass(frozen=True)
class ConversationUrls:
    activities: str
    refresh: str
    disconnect: str
    websocket: str | None
    expires_seconds: int | None


class VaicClient:
    """One VAIC conversation against one bot URL (HTTP mode)."""

    def __init__(
        self,
        bot_url: str,
        token: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.bot_url = bot_url
        self.token = token
        self.conversation_id: str | None = None
        self.urls: ConversationUrls | None = None
        self.last_body: dict[str, Any] | None = None
        self.pushed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._push_socket: aiohttp.ClientWebSocketResponse | None = None
        self._push_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ plumbing

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token is not None else {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _request(self, method: str, url: str, body: Any = None) -> BotReply:
        kwargs: dict[str, Any] = {"headers": self._headers(), "timeout": self._timeout}
        if body is not None:
            kwargs["json"] = body
        async with self._client().request(method, url, **kwargs) as response:
            text = await response.text()
        try:
            parsed: Any = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return BotReply(response.status, parsed, text)

    def _require_urls(self) -> ConversationUrls:
        if self.urls is None:
            raise RuntimeError("no conversation: call create() first")
        return self.urls

    # ------------------------------------------------------------ the API (§1.1-§1.6)

    async def probe(self) -> BotReply:
        """§1.1 validation probe: `GET <botURL>`."""
        return await self._request("GET", self.bot_url)

    async def create(self, conversation_id: str | None = None) -> BotReply:
        """§1.2 create conversation; on 200 stores the resolved conversation URLs."""
        self.conversation_id = conversation_id or str(uuid.uuid4())
        reply = await self._request("POST", self.bot_url, {"conversation": self.conversation_id})
        body = reply.body
        if reply.status == 200 and isinstance(body, dict):
            try:
                websocket = body.get("websocketURL")
                expires = body.get("expiresSeconds")
                self.urls = ConversationUrls(
                    activities=resolve(self.bot_url, str(body["activitiesURL"])),
                    refresh=resolve(self.bot_url, str(body["refreshURL"])),
                    disconnect=resolve(self.bot_url, str(body["disconnectURL"])),
                    websocket=resolve(self.bot_url, str(websocket)) if websocket else None,
                    expires_seconds=int(expires) if isinstance(expires, int | float) else None,
                )
            except KeyError:
                self.urls = None
        return reply

    async def send(
        self, activities: Iterable[Mapping[str, Any]], *, at: datetime | None = None
    ) -> BotReply:
        """§1.3 a turn: stamps each activity with a fresh id and timestamp and posts them."""
        when = at or datetime.now(UTC)
        body = {
            "conversation": self.conversation_id,
            "activities": [stamp(a, when) for a in activities],
        }
        self.last_body = body
        return await self._request("POST", self._require_urls().activities, body)

    async def retry(self) -> BotReply:
        """Re-post the last activities body unchanged (same ids), as VAIC does after a timeout."""
        if self.last_body is None:
            raise RuntimeError("nothing sent yet")
        return await self._request("POST", self._require_urls().activities, self.last_body)

    async def refresh(self) -> BotReply:
        """§1.4 keep-alive."""
        return await self._request(
            "POST", self._require_urls().refresh, {"conversation": self.conversation_id}
        )

    async def disconnect(
        self, reason_code: str = "client-disconnected", reason: str = "Client Side"
    ) -> BotReply:
        """§1.5 end of the conversation."""
        body = {"conversation": self.conversation_id, "reasonCode": reason_code, "reason": reason}
        return await self._request("POST", self._require_urls().disconnect, body)

    async def open_push_socket(self) -> bool:
        """§1.6 connect `websocketURL` (when the bot returned one); pushed activities land in
        `self.pushed`. Returns whether a socket was opened."""
        urls = self._require_urls()
        if urls.websocket is None:
            return False
        self._push_socket = await self._client().ws_connect(urls.websocket, headers=self._headers())
        self._push_task = asyncio.create_task(self._read_pushed(self._push_socket))
        return True

    async def _read_pushed(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in socket:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(frame, dict) and isinstance(frame.get("activities"), list):
                for activity in frame["activities"]:
                    if isinstance(activity, dict):
                        self.pushed.put_nowait(activity)

    async def close(self) -> None:
        if self._push_socket is not None:
            await self._push_socket.close()
        if self._push_task is not None:
            self._push_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._push_task
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> VaicClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class StreamingVaicClient:
    """One VAIC conversation in WebSocket mode (§2), text only (`expectAudioMessages: false`).

    Incoming `activities` messages land whole in `received`, in arrival order; `closed` is set once
    the socket is gone (`close_code` then holds the bot's close code).
    """

    def __init__(
        self,
        bot_ws_url: str,
        token: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.bot_ws_url = websocket_url(bot_ws_url)
        self.token = token
        self.conversation_id: str | None = None
        self.last_message: dict[str, Any] | None = None
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._control: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._session = session
        self._owns_session = session is None
        self._timeout = timeout
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ plumbing

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token is not None else {}

    async def connect(self) -> None:
        """Open the socket (the bearer token rides on the upgrade request)."""
        if self._socket is not None:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._socket = await self._session.ws_connect(
            self.bot_ws_url,
            headers=self._headers(),
            timeout=aiohttp.ClientWSTimeout(ws_close=self._timeout),
            compress=0,
        )
        self._reader = asyncio.create_task(self._read(self._socket))

    async def _read(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in socket:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    message = json.loads(msg.data)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                if message.get("type") == "activities":
                    self.received.put_nowait(message)
                else:
                    self._control.put_nowait(message)
        finally:
            self.close_code = socket.close_code
            self.closed.set()

    async def _send(self, message: dict[str, Any]) -> None:
        if self._socket is None:
            raise RuntimeError("not connected: call connect() or initiate() first")
        await self._socket.send_str(json.dumps(message, separators=(",", ":")))

    async def _first_of(self, queue: asyncio.Queue[dict[str, Any]], wait: float) -> Any:
        """The next item of `queue`, or None at `wait` seconds or once the socket closed empty."""
        if not queue.empty():
            return queue.get_nowait()
        if self.closed.is_set():
            return None
        getter = asyncio.ensure_future(queue.get())
        closing = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait({getter, closing}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (getter, closing):
                if not waiter.done():
                    waiter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return queue.get_nowait() if not queue.empty() else None

    async def _control_reply(self, what: str, wait: float | None) -> dict[str, Any]:
        reply = await self._first_of(self._control, self._timeout if wait is None else wait)
        if reply is None:
            if self.closed.is_set():
                raise aiohttp.ClientConnectionError(f"socket closed before the answer to {what}")
            raise TimeoutError(f"no answer to {what}")
        result: dict[str, Any] = reply
        return result

    # ------------------------------------------------------------ the API (§2.1-§2.3)

    async def validate(self, *, wait: float | None = None) -> dict[str, Any]:
        """`connection.validate` (the portal's check) → the bot's `connection.validated`."""
        await self.connect()
        await self._send({"type": "connection.validate"})
        return await self._control_reply("connection.validate", wait)

    async def initiate(
        self,
        conversation_id: str | None = None,
        caller: str | None = None,
        *,
        wait: float | None = None,
    ) -> dict[str, Any]:
        """`session.initiate` (text only); returns the bot's answer, `session.accepted` or
        `session.error`."""
        await self.connect()
        self.conversation_id = conversation_id or str(uuid.uuid4())
        message: dict[str, Any] = {
            "type": "session.initiate",
            "conversationId": self.conversation_id,
            "expectAudioMessages": False,
            "supportedMediaFormats": ["raw/lpcm16"],
        }
        if caller is not None:
            message["caller"] = caller
        await self._send(message)
        return await self._control_reply("session.initiate", wait)

    async def send(
        self, activities: Iterable[Mapping[str, Any]], *, at: datetime | None = None
    ) -> dict[str, Any]:
        """An `activities` message; each activity is stamped with a fresh id and timestamp.
        Returns the message as sent."""
        if self.conversation_id is None:
            raise RuntimeError("no conversation: call initiate() first")
        when = at or datetime.now(UTC)
        message = {
            "type": "activities",
            "conversationId": self.conversation_id,
            "activities": [stamp(a, when) for a in activities],
        }
        await self._send(message)
        self.last_message = message
        return message

    async def next_activities(self, wait: float) -> dict[str, Any] | None:
        """The next received `activities` message, or None after `wait` seconds or once the
        socket closed with nothing left."""
        message: dict[str, Any] | None = await self._first_of(self.received, wait)
        return message

    async def end(
        self,
        reason_code: str = "client-disconnected",
        reason: str = "Client Side",
        *,
        wait: float | None = None,
    ) -> bool:
        """`session.end`, then wait for the bot to close the socket; returns whether it did.
        Activities that arrive meanwhile stay in `received`."""
        if self._socket is None or self.conversation_id is None:
            raise RuntimeError("no conversation: call initiate() first")
        if not self.closed.is_set():
            await self._send(
                {
                    "type": "session.end",
                    "conversationId": self.conversation_id,
                    "reasonCode": reason_code,
                    "reason": reason,
                }
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), self._timeout if wait is None else wait)
        return self.closed.is_set()

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> StreamingVaicClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
