"""Simulated VAIC: an AudioCodes Bot API HTTP-mode client, written from audiocodes-bot-api.md.

VAIC is always the client (§1): it probes the bot URL, creates a conversation, posts activities,
refreshes, disconnects — with `Authorization: Bearer <token>` on every request — and may open the
optional `websocketURL` to receive asynchronous activities (§1.6). Returned URLs are resolved
against the bot URL per RFC 3986, so relative, root-relative and absolute URLs all work (§1.2).
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
from urllib.parse import urljoin

import aiohttp


def resolve(bot_url: str, reference: str) -> str:
    """RFC 3986 reference resolution of a returned URL against the bot URL."""
    return urljoin(bot_url, reference)


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
