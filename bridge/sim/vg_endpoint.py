"""Simulated Cognigy Voice Gateway Endpoint: a jambonz WebSocket app server that runs flows.

The bridge connects to it as the feature-server would (subprotocol `ws.jambonz.org`). It answers
`session:new` and each `verb:hook` with the next batch of a flow's verbs (bridge/sim/flow.py),
either in the ack or — `reply: command` — in a later `command redirect`, and records every
message it receives per call so tests and the demo can see what the bridge sent.

For fault tests: `reply_delay` makes every answer late (a slow app), and `kill()`/`restart()`
drop every socket without a close frame and stop listening, then listen again on the same port
with the calls' flow state kept — as a Cognigy endpoint pod that dies while its session store
survives, so a `session:reconnect` carries on where the call was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import WSMsgType, web

from bridge.sim.flow import (
    Flow,
    FlowOptions,
    FlowRun,
    ReplyMode,
    Verb,
    VerbForm,
    format_verbs,
    load_flows,
)

SUBPROTOCOL = "ws.jambonz.org"
_ACKED = frozenset(
    {
        "session:new",
        "session:reconnect",
        "session:redirect",
        "session:adulting",
        "verb:hook",
        "dial:confirm",
        "queue:status",
    }
)
# What an app that drives the call by commands answers session:new with (an empty ack would
# make the feature-server reject the call, voicegateway-ws.md §1.5).
_COMMAND_MODE_FIRST: list[Verb] = [{"verb": "config", "notifyEvents": True}]

log = logging.getLogger(__name__)


@dataclass
class SimCall:
    """What the simulated endpoint saw and did for one call."""

    call_sid: str
    flow: str | None
    options: FlowOptions
    subprotocol: str | None
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    run: FlowRun | None = None
    started: bool = False

    def received_types(self) -> list[str]:
        return [str(m.get("type")) for m in self.received]

    def messages(self, message_type: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("type") == message_type]


class VGEndpointSim:
    """The simulated VG endpoint server. Server-level options, when given, override each flow's.

    URL path `/<flow-name>` (last path segment) selects a flow; `/` selects by the callee (`to`
    in `session:new`) against the flows' `numbers`, falling back to a flow named `default`.
    `record=False` (benchmarks) keeps no message log and forgets a call once its socket closes.
    """

    def __init__(
        self,
        flows: Mapping[str, Flow] | None = None,
        *,
        reply: ReplyMode | str | None = None,
        verb_form: VerbForm | str | None = None,
        floats: bool | None = None,
        ack_hooks: bool | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        command_delay: float = 0.02,
        reply_delay: float = 0.0,
        record: bool = True,
    ) -> None:
        self.flows: dict[str, Flow] = dict(flows) if flows is not None else load_flows()
        self.reply = ReplyMode(reply) if reply is not None else None
        self.verb_form = VerbForm(verb_form) if verb_form is not None else None
        self.floats = floats
        self.ack_hooks = ack_hooks
        self.host = host
        self.port = port
        self.command_delay = command_delay
        self.reply_delay = reply_delay
        self.record = record
        self.calls: dict[str, SimCall] = {}
        self.stray: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self._transports: set[asyncio.Transport] = set()

    # ------------------------------------------------------------ lifecycle

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
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
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"simulator stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def kill(self) -> None:
        """Die abruptly: pending replies are lost, sockets drop without a close frame (the
        bridge sees 1006) and the port refuses connections until `restart()`. Calls are kept."""
        for task in list(self._tasks):
            task.cancel()
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def restart(self) -> int:
        """Listen again on the same port after `kill()`; known calls can reconnect."""
        return await self.start()

    async def __aenter__(self) -> VGEndpointSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def url(self, flow: str | None = None) -> str:
        return f"ws://{self.host}:{self.port}/{flow or ''}"

    def options_for(self, flow: Flow | None) -> FlowOptions:
        options = flow.options if flow is not None else FlowOptions()
        if self.reply is not None:
            options = replace(options, reply=self.reply)
        if self.verb_form is not None:
            options = replace(options, verb_form=self.verb_form)
        if self.floats is not None:
            options = replace(options, floats=self.floats)
        if self.ack_hooks is not None:
            options = replace(options, ack_hooks=self.ack_hooks)
        return options

    # ------------------------------------------------------------ socket

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        flow_name = request.match_info["tail"].rstrip("/").rsplit("/", 1)[-1]
        if flow_name and flow_name not in self.flows:
            raise web.HTTPNotFound(text=f"no flow {flow_name!r}")
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), max_msg_size=4 * 1024 * 1024)
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(text="a jambonz app socket needs a WebSocket upgrade")
        await ws.prepare(request)
        self._sockets.add(ws)
        transport = request.transport
        if transport is not None:
            self._transports.add(transport)
        call: SimCall | None = None
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                call = await self._receive(ws, flow_name or None, call, msg.data)
        finally:
            self._sockets.discard(ws)
            if transport is not None:
                self._transports.discard(transport)
            if call is not None:
                call.close_code = ws.close_code
                call.closed.set()
                if not self.record:
                    self.calls.pop(call.call_sid, None)
        return ws

    async def _receive(
        self, ws: web.WebSocketResponse, flow_name: str | None, call: SimCall | None, text: str
    ) -> SimCall | None:
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            log.warning("simulated VG endpoint: non-JSON-object frame ignored")
            (call.received if call is not None else self.stray).append({"_invalid": text})
            return call
        msg_type = str(msg.get("type", ""))
        if msg_type in ("session:new", "session:reconnect", "session:adulting") and call is None:
            call = self._open_call(ws, flow_name, msg)
        if call is None:
            self.stray.append(msg)
            return None
        if self.record:
            call.received.append(msg)
        if msg_type == "session:new" and call.run is not None:
            call.started = True
            await self._answer(ws, call, msg, call.run.start(), first=True)
        elif msg_type == "session:reconnect" and call.run is not None and not call.started:
            # a call this endpoint never saw start (it lost it): the flow starts afresh
            call.started = True
            await self._answer(ws, call, msg, call.run.start(), first=True)
        elif msg_type == "verb:hook" and call.run is not None:
            data = msg.get("data")
            verbs = call.run.receive_hook(
                str(msg.get("hook", "")), data if isinstance(data, Mapping) else {}
            )
            await self._answer(ws, call, msg, verbs, first=False)
        elif msg_type in _ACKED:
            await self._send(ws, call, {"type": "ack", "msgid": msg.get("msgid")})
        return call

    def _open_call(
        self, ws: web.WebSocketResponse, flow_name: str | None, msg: dict[str, Any]
    ) -> SimCall:
        raw = msg.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        call_sid = str(msg.get("call_sid") or data.get("call_sid") or "")
        existing = self.calls.get(call_sid)
        if existing is not None:
            existing.closed.clear()
            return existing
        flow = self._select(flow_name, str(data.get("to", "")))
        call = SimCall(
            call_sid=call_sid,
            flow=flow.name if flow is not None else None,
            options=self.options_for(flow),
            subprotocol=ws.ws_protocol,
            run=FlowRun(flow) if flow is not None else None,
        )
        self.calls[call_sid] = call
        if flow is None:
            log.warning("simulated VG endpoint: no flow for this call")
        return call

    def _select(self, flow_name: str | None, callee: str) -> Flow | None:
        if flow_name:
            return self.flows[flow_name]
        for flow in self.flows.values():
            if callee and flow.serves(callee):
                return flow
        return self.flows.get("default")

    async def _answer(
        self,
        ws: web.WebSocketResponse,
        call: SimCall,
        msg: dict[str, Any],
        verbs: list[Verb],
        *,
        first: bool,
    ) -> None:
        options = call.options
        msgid = msg.get("msgid")
        if self.reply_delay > 0:
            await asyncio.sleep(self.reply_delay)
        if options.reply is ReplyMode.ACK:
            ack: dict[str, Any] = {"type": "ack", "msgid": msgid}
            if verbs:
                ack["data"] = format_verbs(verbs, options)
            await self._send(ws, call, ack)
            return
        if first:
            first_verbs = format_verbs(_COMMAND_MODE_FIRST, options)
            await self._send(ws, call, {"type": "ack", "msgid": msgid, "data": first_verbs})
        elif options.ack_hooks:
            await self._send(ws, call, {"type": "ack", "msgid": msgid})
        if verbs:
            command = {
                "type": "command",
                "command": "redirect",
                "queueCommand": True,
                "data": format_verbs(verbs, options),
            }
            task = asyncio.create_task(self._send_later(ws, call, command))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_later(
        self, ws: web.WebSocketResponse, call: SimCall, message: dict[str, Any]
    ) -> None:
        await asyncio.sleep(self.command_delay)
        await self._send(ws, call, message)

    async def _send(
        self, ws: web.WebSocketResponse, call: SimCall, message: dict[str, Any]
    ) -> None:
        if ws.closed:
            return
        if self.record:
            call.sent.append(message)
        try:
            await ws.send_str(json.dumps(message))
        except ConnectionError:
            log.info("simulated VG endpoint: socket closed before a reply could be sent")
