"""The legacy path: the bridge plays VAIC toward the Cognigy AudioCodes Endpoint (design §3.5).

Pass-through: create, the caller's activities forwarded unchanged (after de-duplication),
refresh on its own timer before the legacy `expiresSeconds`, disconnect with the caller's
reason; a legacy `websocketURL` is connected with the legacy token and its pushed activities
relayed. What the legacy bot answers goes to the sink as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin

import aiohttp

from bridge import jsontext
from bridge.path import CallInfo, PathName, PathSink, PathStartError

log = logging.getLogger("bridge.legacy_path")
REQUEST_TIMEOUT_S = 10.0
# Refresh well before the legacy bot's expiry; VAIC's own cadence is not documented.
REFRESH_FRACTION = 0.5
RETRIES = 1


class LegacyError(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class LegacyPath:
    """One call on a legacy AudioCodes Bot API bot (HTTP mode)."""

    name: PathName = "legacy"

    def __init__(self, info: CallInfo, sink: PathSink, http: aiohttp.ClientSession) -> None:
        upstream = info.route.legacy
        assert upstream is not None
        self._info = info
        self._sink = sink
        self._http = http
        self._bot_url = upstream.url
        self._headers = {"Authorization": f"Bearer {upstream.token}"} if upstream.token else {}
        self._urls: dict[str, str] = {}
        self._async = False
        self._expires_s: float | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._open = False
        self.log = logging.LoggerAdapter(
            log, {"route": info.route_name, "conversation": info.conversation_id}
        )

    async def start(self, activities: Sequence[dict[str, Any]]) -> None:
        try:
            created = await self._post(self._bot_url, {"conversation": self._info.conversation_id})
        except LegacyError as exc:
            raise PathStartError(exc.kind, str(exc)) from exc
        for key in ("activitiesURL", "refreshURL", "disconnectURL", "websocketURL"):
            value = created.get(key)
            if isinstance(value, str) and value:
                self._urls[key] = urljoin(self._bot_url, value)
        if "activitiesURL" not in self._urls:
            raise PathStartError("bad_response", "create answered without activitiesURL")
        self._open = True
        expires = created.get("expiresSeconds")
        self._begin(float(expires) if isinstance(expires, int | float) else None)
        await self.forward(activities)

    def _begin(self, expires_s: float | None) -> None:
        """Keep the bot's conversation alive and relay its pushes (async mode)."""
        if expires_s is not None and expires_s > 0:
            self._expires_s = expires_s
            self._refresher = asyncio.create_task(self._refresh_loop(expires_s))
        if "websocketURL" in self._urls:
            self._async = True
            self._pusher = asyncio.create_task(self._relay_pushes(self._urls["websocketURL"]))

    def snapshot(self) -> dict[str, Any] | None:
        """What another instance needs to go on with this call: the bot's URLs (the token is
        the route's, never stored). None before the bot created the conversation."""
        if not self._open:
            return None
        return {"urls": dict(self._urls), "expires_s": self._expires_s}

    async def resume(self, data: dict[str, Any]) -> None:
        """Go on with a call another instance started (`snapshot`); raises PathStartError."""
        urls = data.get("urls")
        if not isinstance(urls, dict) or not isinstance(urls.get("activitiesURL"), str):
            raise PathStartError("bad_snapshot", "legacy snapshot without activitiesURL")
        self._urls = {str(k): str(v) for k, v in urls.items()}
        self._open = True
        expires = data.get("expires_s")
        self._begin(float(expires) if isinstance(expires, int | float) else None)

    async def forward(self, activities: Sequence[dict[str, Any]]) -> None:
        if not self._open or not activities:
            return
        body = {"conversation": self._info.conversation_id, "activities": list(activities)}
        self._sink.set_busy(True)
        try:
            answer = await self._post(self._urls["activitiesURL"], body, retries=RETRIES)
        except LegacyError as exc:
            self._count_error(exc.kind)
            self.log.warning("legacy bot failed a turn (%s)", exc.kind)
            self._sink.set_busy(False)
            self._sink.fail("legacy bot unavailable")
            await self._sink.settle()
            return
        outputs = answer.get("activities")
        outputs = [a for a in outputs if isinstance(a, dict)] if isinstance(outputs, list) else []
        self._sink.set_busy(False)
        # A sync legacy bot answers a turn in full; an async one pushes the rest later.
        self._sink.emit(outputs, turn_ending=not self._async)
        await self._sink.settle()

    async def end(self, reason_code: str | None, reason: str | None) -> None:
        if not self._open:
            return
        self._open = False
        body: dict[str, Any] = {"conversation": self._info.conversation_id}
        if reason_code is not None:
            body["reasonCode"] = reason_code
        if reason is not None:
            body["reason"] = reason
        url = self._urls.get("disconnectURL")
        if url is not None:
            try:
                await self._post(url, body)
            except LegacyError as exc:
                self._count_error(exc.kind)

    async def detach(self) -> None:
        await self.close()  # no disconnect: the bot's conversation goes on elsewhere

    async def close(self) -> None:
        self._open = False
        for task in (self._refresher, self._pusher):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _post(self, url: str, body: dict[str, Any], *, retries: int = 0) -> dict[str, Any]:
        for attempt in range(retries + 1):
            try:
                async with self._http.post(
                    url,
                    json=body,
                    headers=self._headers,
                    timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                ) as resp:
                    if resp.status >= 500 and attempt < retries:
                        continue
                    if resp.status != 200:
                        raise LegacyError(f"http_{resp.status // 100}xx", f"status {resp.status}")
                    raw = await resp.read()
            except TimeoutError as exc:
                if attempt < retries:
                    continue
                raise LegacyError("timeout", "no answer in time") from exc
            except aiohttp.ClientError as exc:
                if attempt < retries:
                    continue
                raise LegacyError("connect", type(exc).__name__) from exc
            if not raw.strip():
                return {}
            try:
                answer = jsontext.loads(raw)
            except ValueError as exc:
                raise LegacyError("bad_response", "answer is not JSON") from exc
            if not isinstance(answer, dict):
                raise LegacyError("bad_response", "answer is not a JSON object")
            return answer
        raise LegacyError("retries", "gave up")  # pragma: no cover - loop always returns/raises

    async def _refresh_loop(self, expires_s: float) -> None:
        url = self._urls.get("refreshURL")
        if url is None:
            return
        while self._open:
            await asyncio.sleep(max(1.0, expires_s * REFRESH_FRACTION))
            try:
                answer = await self._post(url, {"conversation": self._info.conversation_id})
            except LegacyError as exc:
                self._count_error(f"refresh_{exc.kind}")
                continue
            granted = answer.get("expiresSeconds")
            if isinstance(granted, int | float) and granted > 0:
                expires_s = float(granted)

    async def _relay_pushes(self, url: str) -> None:
        ws_url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        while self._open:
            try:
                async with self._http.ws_connect(ws_url, headers=self._headers) as ws:
                    async for msg in ws:
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            continue
                        await self._relay(msg.data)
            except aiohttp.ClientError as exc:
                self._count_error("push_socket")
                self.log.info("legacy push socket failed: %s", type(exc).__name__)
            if self._open:
                await asyncio.sleep(0.5)  # the socket dropped mid-call: reconnect

    async def _relay(self, text: str) -> None:
        try:
            frame = jsontext.loads(text)
        except ValueError:
            self._count_error("bad_push")
            return
        activities = frame.get("activities") if isinstance(frame, dict) else None
        if not isinstance(activities, list):
            self._count_error("bad_push")
            return
        self._sink.emit([a for a in activities if isinstance(a, dict)])
        await self._sink.settle()

    def _count_error(self, kind: str) -> None:
        self._info.metrics.upstream_errors.labels(self._info.route_name, self.name, kind).inc()
