"""Simulated legacy Cognigy AudioCodes Endpoint: an AudioCodes Bot API HTTP-mode bot server.

The bridge's legacy path calls it as VAIC would (audiocodes-bot-api.md §1): `GET` probe, `POST`
create (relative URLs, `expiresSeconds`, `websocketURL` in Async Mode), activities, refresh,
disconnect, bearer token on every request. It runs the same flows as the simulated VG endpoint
(bridge/sim/flows, the same `FlowRun` branching) but renders each node as the Cognigy AudioCodes
Node would (bridge/sim/ac_nodes.py). Sync mode answers an activities POST with every output of
that turn; Async Mode answers `{}` and pushes each output on the conversation's WebSocket.
Records every request and activity per conversation so tests and the demo can see what arrived.
`fail_with` (an HTTP status, settable while it runs) simulates an outage: every request past the
token check gets that status and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from aiohttp import WSMsgType, web

from bridge.sim.ac_nodes import Activity, render_ac_node
from bridge.sim.flow import Flow, FlowRun, NodeType, load_flows, override_flows
from bridge.sim.vaic import timestamp

log = logging.getLogger(__name__)

# A deliberately divergent variant of three shipped flows (`divergent=True`): one prompt text,
# one play URL, one transfer target differ, so a shadow comparison shows exactly those fields.
DIVERGENT_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "support": {"welcome": {"text": "Welcome to ACME customer care."}},
    "media": {"announcement": {"url": "https://media.example.com/prompts/announcement-v2.wav"}},
    "transfer_dial": {"transfer": {"number": "+4989654321"}},
}


class RequestKind(StrEnum):
    PROBE = "probe"
    CREATE = "create"
    ACTIVITIES = "activities"
    REFRESH = "refresh"
    DISCONNECT = "disconnect"
    WEBSOCKET = "websocket"


_CONVERSATION_OPS = frozenset(
    {RequestKind.ACTIVITIES, RequestKind.REFRESH, RequestKind.DISCONNECT, RequestKind.WEBSOCKET}
)


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the simulator answered (never the Authorization header)."""

    kind: RequestKind | None
    method: str
    path: str
    status: int
    body: Any = None
    conversation: str | None = None


@dataclass
class LegacyCall:
    """What the simulated legacy endpoint saw and did for one conversation."""

    conversation_id: str
    flow: str | None
    async_mode: bool
    created_at: float
    requests: list[RecordedRequest] = field(default_factory=list)
    # every activity received, in order, retried duplicates included
    received: list[dict[str, Any]] = field(default_factory=list)
    # outputs per turn (one turn per activities POST with new ids), stamped
    turns: list[list[Activity]] = field(default_factory=list)
    # outputs as delivered, in order: in HTTP responses or pushed
    sent: list[Activity] = field(default_factory=list)
    # WebSocket frames pushed (async mode)
    pushed: list[dict[str, Any]] = field(default_factory=list)
    start_parameters: dict[str, Any] = field(default_factory=dict)
    duplicates: int = 0
    refreshes: int = 0
    disconnect: dict[str, Any] | None = None
    expired: bool = False
    socket_connected: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    run: FlowRun | None = None
    last_seen: float = 0.0
    _seen: dict[str, int] = field(default_factory=dict)
    # async outputs produced while no socket was connected: next socket or next response
    waiting: list[Activity] = field(default_factory=list)
    _socket: web.WebSocketResponse | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def active(self) -> bool:
        return not self.ended.is_set()

    def received_names(self) -> list[str]:
        """`message` for messages, the event name for events, in arrival order."""
        return [
            str(a.get("name") if a.get("type") == "event" else a.get("type")) for a in self.received
        ]

    def outputs(self) -> list[Activity]:
        """Every output the flow produced, in order (whether delivered yet or not)."""
        return [activity for turn in self.turns for activity in turn]


def stamp(activity: Mapping[str, Any], at: datetime) -> Activity:
    """A copy with a fresh uuid `id` and an ISO-8601 UTC millisecond `timestamp`."""
    return {**activity, "id": str(uuid.uuid4()), "timestamp": timestamp(at)}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _split(tail: str) -> tuple[RequestKind | None, str | None, str | None]:
    """(kind, conversation id, flow name) of a request path below the server root."""
    segments = [s for s in tail.split("/") if s]
    if (
        len(segments) >= 3
        and segments[-3] == "conversation"
        and segments[-1] in {k.value for k in _CONVERSATION_OPS}
    ):
        return RequestKind(segments[-1]), segments[-2], None
    return None, None, segments[-1] if segments else None


class LegacyEndpointSim:
    """The simulated Cognigy AudioCodes Endpoint server.

    Bot URL `/<flow-name>` (last path segment) selects a flow; `/` selects by the `start` event's
    `parameters.callee` against the flows' `numbers`, falling back to a flow named `default`.
    Async Mode is per bot URL, as the real endpoint's toggle: `async_mode` for every bot URL,
    `async_flows` for `/<flow>` bot URLs of those flows. `token` None accepts any request.
    `overrides` (`{flow: {node id: {param: value}}}`, see `flow.override_flow`) and
    `divergent` (apply `DIVERGENT_OVERRIDES`) make this side run a variant of the flows.
    `fail_with` set to a status (e.g. 503) fails every authorized request with it until reset
    to None. `record=False` (benchmarks) keeps no request log and forgets a call once it is
    disconnected, so memory stays flat over millions of turns.
    """

    def __init__(
        self,
        flows: Mapping[str, Flow] | None = None,
        *,
        token: str | None = None,
        async_mode: bool = False,
        async_flows: Collection[str] = (),
        overrides: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        divergent: bool = False,
        expires_seconds: int = 120,
        push_delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        record: bool = True,
    ) -> None:
        base = dict(flows) if flows is not None else load_flows()
        changes: dict[str, Mapping[str, Mapping[str, Any]]] = {}
        if divergent:
            changes.update({k: v for k, v in DIVERGENT_OVERRIDES.items() if k in base})
        changes.update(overrides or {})
        self.flows: dict[str, Flow] = override_flows(base, changes) if changes else base
        self.token = token
        self.async_mode = async_mode
        self.async_flows = frozenset(async_flows)
        self.expires_seconds = expires_seconds
        self.push_delay = push_delay
        self.host = host
        self.port = port
        self.clock = clock
        self.record = record
        self.fail_with: int | None = None
        self.calls: dict[str, LegacyCall] = {}
        self.requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ lifecycle

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(self) -> int:
        """Bind and serve; returns the bound port (useful with `port=0`)."""
        self._runner = web.AppRunner(self.make_app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for call in self.calls.values():
            if call._socket is not None and not call._socket.closed:
                await call._socket.close(code=1001, message=b"simulator stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LegacyEndpointSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def url(self, flow: str | None = None) -> str:
        """The bot URL VAIC (the bridge's legacy path) is configured with."""
        return f"http://{self.host}:{self.port}/{flow or ''}"

    def is_async(self, flow: str | None) -> bool:
        return self.async_mode or (flow is not None and flow in self.async_flows)

    def call(self, conversation_id: str) -> LegacyCall:
        return self.calls[conversation_id]

    # ------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind, conversation_id, flow_name = _split(request.match_info["tail"])
        if kind is None:
            kind = RequestKind.PROBE if request.method == "GET" else RequestKind.CREATE
        body: Any = None
        if request.method == "POST" and request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return self._record(
                    request, kind, _error(400, "body is not JSON"), None, conversation_id
                )
        response = await self._dispatch(request, kind, conversation_id, flow_name, body)
        return self._record(request, kind, response, body, conversation_id)

    def _record(
        self,
        request: web.Request,
        kind: RequestKind,
        response: web.StreamResponse,
        body: Any,
        conversation_id: str | None,
    ) -> web.StreamResponse:
        if kind is RequestKind.CREATE and isinstance(body, dict):
            created = body.get("conversation")
            conversation_id = created if isinstance(created, str) else None
        entry = RecordedRequest(
            kind, request.method, request.path, response.status, body, conversation_id
        )
        if not self.record:
            return response
        self.requests.append(entry)
        call = self.calls.get(conversation_id or "")
        if call is not None:
            call.requests.append(entry)
        return response

    def _authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, f"Bearer {self.token}".encode())

    async def _dispatch(
        self,
        request: web.Request,
        kind: RequestKind,
        conversation_id: str | None,
        flow_name: str | None,
        body: Any,
    ) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token")
        if self.fail_with is not None:
            return _error(self.fail_with, "simulated outage")
        if kind in (RequestKind.PROBE, RequestKind.CREATE):
            if flow_name is not None and flow_name not in self.flows:
                return _error(404, "no such flow")
            if kind is RequestKind.PROBE:
                if request.method != "GET":
                    return _error(405, "method not allowed")
                return web.json_response({"type": "ac-bot-api", "success": True})
            if request.method != "POST":
                return _error(405, "method not allowed")
            return self._create(flow_name, body)
        call = self._live_call(conversation_id or "")
        if call is None:
            return _error(404, "unknown conversation")
        call.last_seen = self.clock()
        if kind is RequestKind.WEBSOCKET:
            if request.method != "GET":
                return _error(405, "method not allowed")
            return await self._websocket(request, call)
        if request.method != "POST":
            return _error(405, "method not allowed")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        if kind is RequestKind.REFRESH:
            call.refreshes += 1
            return web.json_response({"expiresSeconds": self.expires_seconds})
        if kind is RequestKind.DISCONNECT:
            await self._end(call, body)
            return web.json_response({})
        return self._activities(call, body)

    def _live_call(self, conversation_id: str) -> LegacyCall | None:
        call = self.calls.get(conversation_id)
        if call is None or not call.active:
            return None
        if self.clock() - call.last_seen > self.expires_seconds:
            call.expired = True
            call.ended.set()
            return None
        return call

    def _create(self, flow_name: str | None, body: Any) -> web.Response:
        conversation_id = body.get("conversation") if isinstance(body, dict) else None
        if not isinstance(conversation_id, str) or not conversation_id:
            return _error(400, "`conversation` is required")
        existing = self.calls.get(conversation_id)
        if existing is not None and not existing.active:
            return _error(400, "conversation id already used")
        if existing is None:
            now = self.clock()
            call = LegacyCall(
                conversation_id=conversation_id,
                flow=flow_name,
                async_mode=self.is_async(flow_name),
                created_at=now,
                last_seen=now,
            )
            self.calls[conversation_id] = call
        else:
            call = existing
        base = f"conversation/{quote(conversation_id, safe='')}"
        answer: dict[str, Any] = {
            "activitiesURL": f"{base}/activities",
            "refreshURL": f"{base}/refresh",
            "disconnectURL": f"{base}/disconnect",
            "expiresSeconds": self.expires_seconds,
        }
        if call.async_mode:
            answer["websocketURL"] = f"{base}/websocket"
        return web.json_response(answer)

    # ------------------------------------------------------------ turns

    def _activities(self, call: LegacyCall, body: Mapping[str, Any]) -> web.Response:
        raw = body.get("activities")
        if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
            return _error(400, "`activities` must be a list of objects")
        call.received.extend(raw)
        ids = [a.get("id") for a in raw]
        known = [call._seen[i] for i in ids if isinstance(i, str) and i in call._seen]
        if raw and len(known) == len(raw):
            # VAIC retried a POST it timed out on: answer with the original turn's outputs.
            call.duplicates += 1
            if call.async_mode:
                return web.json_response({})
            return web.json_response({"activities": call.turns[known[0]]})
        fresh = [a for a in raw if not (isinstance(a.get("id"), str) and a["id"] in call._seen)]
        turn = len(call.turns)
        for activity in fresh:
            if isinstance(activity.get("id"), str):
                call._seen[activity["id"]] = turn
        produced: list[Activity] = []
        for activity in fresh:
            produced.extend(self._input(call, activity))
        now = datetime.now(UTC)
        outputs = [stamp(a, now) for a in produced]
        call.turns.append(outputs)
        if not call.async_mode:
            call.sent.extend(outputs)
            return web.json_response({"activities": outputs})
        waiting = list(call.waiting)
        call.waiting.clear()
        call.sent.extend(waiting)
        if outputs:
            self._spawn(self._push_later(call, outputs))
        return web.json_response({"activities": waiting} if waiting else {})

    def _input(self, call: LegacyCall, activity: Mapping[str, Any]) -> list[Activity]:
        """The outputs of one caller activity (audiocodes-bot-api.md §3.1)."""
        kind = activity.get("type")
        name = activity.get("name") if kind == "event" else None
        if name == "start" or call.run is None:
            if call.run is not None:
                return []
            params = activity.get("parameters") if name == "start" else None
            call.start_parameters = dict(params) if isinstance(params, Mapping) else {}
            flow = self._select(call.flow, str(call.start_parameters.get("callee", "")))
            if flow is None:
                log.warning("simulated legacy endpoint: no flow for this conversation")
                return []
            call.flow = flow.name
            # Cognigy runs the flow on the first input even when VAIC sends no start event.
            call.run = FlowRun(flow, render=render_ac_node)
            return call.run.start()
        run = call.run
        value = activity.get("value")
        if kind == "message":
            parameters = activity.get("parameters")
            confidence = parameters.get("confidence", 1) if isinstance(parameters, Mapping) else 1
            alternative = {"transcript": str(activity.get("text", "")), "confidence": confidence}
            return self._answer(
                run,
                {
                    "reason": "speechDetected",
                    "speech": {"is_final": True, "alternatives": [alternative]},
                },
            )
        if name in ("DTMF", "dtmf"):
            return self._answer(run, {"reason": "dtmfDetected", "digits": str(value or "")})
        if name == "noUserInput":
            return self._answer(run, {"reason": "timeout"})
        if name == "transferStatus":
            pending = run.pending
            if pending is None or pending.type is not NodeType.TRANSFER or pending.hook is None:
                return []
            result = value if isinstance(value, Mapping) else {}
            status = (
                "completed"
                if result.get("status") == "answered"
                else str(result.get("reasonCode") or "failed")
            )
            return run.receive_hook(pending.hook, {"dial_call_status": status})
        if name == "playUrlFailed":
            url = value.get("playUrlUrl") if isinstance(value, Mapping) else None
            for node in run.flow.nodes:
                urls = node.params.get("url")
                urls = urls if isinstance(urls, list) else [urls]
                if node.type is NodeType.PLAY and node.hook is not None and url in urls:
                    return run.receive_hook(node.hook, {"reason": "playFailed", "status": "fail"})
            return []
        if name == "conversationEnd":
            call.ended.set()
        return []

    @staticmethod
    def _answer(run: FlowRun, data: Mapping[str, Any]) -> list[Activity]:
        pending = run.pending
        if pending is None or pending.type is not NodeType.QUESTION or pending.hook is None:
            return []
        return run.receive_hook(pending.hook, data)

    def _select(self, flow_name: str | None, callee: str) -> Flow | None:
        if flow_name is not None:
            return self.flows[flow_name]
        for flow in self.flows.values():
            if callee and flow.serves(callee):
                return flow
        return self.flows.get("default")

    # ------------------------------------------------------------ async mode

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push_later(self, call: LegacyCall, outputs: list[Activity]) -> None:
        # The lock keeps turns in order when a later turn's task starts before this one ends.
        async with call._lock:
            if self.push_delay > 0:
                await asyncio.sleep(self.push_delay)
            for activity in outputs:
                if not await self._push(call, [activity]):
                    call.waiting.append(activity)

    async def _push(self, call: LegacyCall, activities: list[Activity]) -> bool:
        socket = call._socket
        if socket is None or socket.closed:
            return False
        frame = {"conversation": call.conversation_id, "activities": activities}
        try:
            await socket.send_str(json.dumps(frame))
        except ConnectionError:
            return False
        call.pushed.append(frame)
        call.sent.extend(activities)
        return True

    async def _websocket(self, request: web.Request, call: LegacyCall) -> web.StreamResponse:
        if not call.async_mode:
            return _error(404, "this conversation has no websocketURL")
        ws = web.WebSocketResponse()
        if not ws.can_prepare(request).ok:
            return _error(400, "websocketURL needs a WebSocket upgrade")
        await ws.prepare(request)
        previous = call._socket
        call._socket = ws
        call.socket_connected.set()
        if previous is not None and not previous.closed:
            await previous.close(code=1000, message=b"replaced")
        async with call._lock:
            waiting = list(call.waiting)
            call.waiting.clear()
            if waiting and not await self._push(call, waiting):
                call.waiting[:0] = waiting
        async for msg in ws:
            if msg.type is WSMsgType.ERROR:
                break
        if call._socket is ws:
            call._socket = None
            call.socket_connected.clear()
        return ws

    async def _end(self, call: LegacyCall, body: Mapping[str, Any]) -> None:
        call.disconnect = dict(body)
        call.ended.set()
        if not self.record:
            self.calls.pop(call.conversation_id, None)
        socket = call._socket
        if socket is not None and not socket.closed:
            await socket.close(code=1000, message=b"conversation ended")
