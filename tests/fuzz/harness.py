"""The fuzz harness: one `Surface` per input surface, `fuzz()` to run one with hypothesis.

A surface sets up what it attacks (a real bridge on loopback, a simulated or hostile Voice
Gateway app, a copy of the mapping directory), checks one generated case against its invariants
(raising on a violation), and tears down. `fuzz()` runs a surface on its own event loop with a
guard that turns unhandled task exceptions and ERROR log records into failures. Used by
`tests/test_fuzz.py` (CI-sized) and `bench/fuzz.py` (the long run).
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import gc
import json
import logging
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError
from hypothesis import HealthCheck, Phase, example, given, seed, settings
from hypothesis import strategies as st
from yarl import URL

import bridge.voicegateway.protocol as vg_protocol
from bridge.app import GatewayKey, create_app
from bridge.config import Config, parse_config
from bridge.errors import ConfigError, MappingError
from bridge.mapping.engine import Engine
from bridge.mapping.loader import SHIPPED_DIR, MappingSet, check_mappings, load_mappings
from bridge.sim.vg_endpoint import VGEndpointSim
from bridge.transport.http_errors import JsonErrorRunner
from bridge.voicegateway import events as vge
from bridge.voicegateway.wire import HookKind
from tests.fuzz import strategies as S

CORPUS_DIR = Path(__file__).parent / "corpus"
TOKEN = "tok"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLOSED_VG = "ws://127.0.0.1:1/closed"
CASE_TIMEOUT_S = 30.0
DEFAULT_RECURSION_LIMIT = 1000  # CPython's; the bridge never changes it
PARSER_LIMIT = 8000  # aiohttp's max_line_size / max_field_size are 8190 bytes
PROGRESS_EVERY = 1000
KEPT_FAILURES = 20  # failing cases kept whole by a counting run (they can be large)
FUZZ_ACK_TIMEOUT_S = 0.05  # the jambonz ack budget during fuzzing (5 s in production)
START = {"type": "event", "name": "start", "parameters": dict(S.START_PARAMS)}


class FuzzFailure(AssertionError):
    """An invariant of a surface was broken."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise FuzzFailure(message)


def strict_json(text: str | bytes) -> Any:
    """Parse as RFC 8259 JSON: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> Any:
        raise FuzzFailure(f"non-JSON constant {constant} sent")

    return json.loads(text, parse_constant=refuse)


# ---- the guard: unhandled task exceptions and ERROR log records ----------------------------


class _Recorder(logging.Handler):
    def __init__(self, problems: list[str]) -> None:
        super().__init__(logging.ERROR)
        self._problems = problems

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if record.name == "aiohttp.server" and isinstance(
            error, BadHttpMessage | RequestPayloadError
        ):
            # aiohttp's own: a request beyond its parser's limits (answered 4xx by aiohttp), or
            # a body with a broken Content-Encoding that aiohttp drains after the response.
            return
        text = f"ERROR log {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        self._problems.append(text[:2000])


class Guard:
    """Records what must never happen while a surface runs."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.problems: list[str] = []
        self._loop = loop
        self._handler = _Recorder(self.problems)

    def __enter__(self) -> Guard:
        self._loop.set_exception_handler(self._on_loop_error)
        logging.getLogger().addHandler(self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self._handler)
        self._loop.set_exception_handler(None)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        detail = f" ({type(error).__name__}: {error})" if error is not None else ""
        self.problems.append(f"unhandled in loop: {context.get('message')}{detail}"[:2000])

    def take(self) -> list[str]:
        problems = list(self.problems)
        self.problems.clear()
        return problems


# ---- the corpus ------------------------------------------------------------------------------


def encode_case(value: Any) -> Any:
    """A case as JSON-able data (bytes as `{"$utf8": text}` or `{"$bytes": base64}`)."""
    if isinstance(value, bytes):
        try:
            return {"$utf8": value.decode("utf-8")}
        except UnicodeDecodeError:
            return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: encode_case(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_case(v) for v in value]
    return value


def decode_case(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return base64.b64decode(value["$bytes"])
        if set(value) == {"$utf8"}:
            return str(value["$utf8"]).encode("utf-8")
        return {k: decode_case(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_case(v) for v in value]
    return value


def load_corpus(surface: str) -> list[tuple[str, Any]]:
    """(file name, case) of every saved case of `surface`."""
    directory = CORPUS_DIR / surface
    cases = []
    for path in sorted(directory.glob("*.json")):
        entry = json.loads(path.read_text(encoding="utf-8"))
        cases.append((path.name, decode_case(entry["case"])))
    return cases


def save_case(surface: str, name: str, case: Any, note: str) -> Path:
    directory = CORPUS_DIR / surface
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    entry = {"note": note, "case": encode_case(case)}
    path.write_text(json.dumps(entry, indent=1, ensure_ascii=True) + "\n", encoding="utf-8")
    return path


# ---- surfaces --------------------------------------------------------------------------------


class Surface(abc.ABC):
    """One input surface: its cases, and the invariants every case must keep."""

    name = ""

    @abc.abstractmethod
    def cases(self) -> st.SearchStrategy[Any]: ...

    async def setup(self) -> None:  # noqa: B027 - an optional hook: most surfaces start nothing
        pass

    @abc.abstractmethod
    async def check(self, case: Any) -> None: ...

    async def teardown(self) -> None:  # noqa: B027 - an optional hook, like setup
        pass


def _config(routes: dict[str, dict[str, Any]]) -> Config:
    # The per-conversation rate limit would turn the fuzzer's bursts into 429s / dropped frames.
    unlimited = {name: {"max_requests_per_second": 10_000, **r} for name, r in routes.items()}
    return parse_config(yaml.safe_dump({"routes": unlimited}), env={})


class _RunningBridge:
    """A bridge on loopback and a client session toward it."""

    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None
        self.http: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self, config: Config) -> None:
        self.app = create_app(config)
        # As `serve` runs it: requests aiohttp's parser refuses are answered as JSON too.
        self.runner = JsonErrorRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.http = aiohttp.ClientSession()
        # One connection per hostile request: aiohttp answers the request *after* one whose
        # unread body it cannot decode on the same keep-alive connection with a plain 400.
        self.hostile = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
            await self.hostile.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def reap(self, keep: set[tuple[str, str]] = frozenset()) -> None:  # type: ignore[assignment]
        """End every call but `keep`, as the expiry scan would (cases must not pile up)."""
        gateway = self.app[GatewayKey]
        for call in gateway.calls.all():
            key = (call.route_name, call.conversation.conversation_id)
            if key in keep:
                continue
            gateway.calls.remove(call)
            await call.expire()
            await call.close()
        gateway.prune_streams()

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        assert self.http is not None
        async with self.http.post(self.url + path, json=body, headers=AUTH) as resp:
            return resp.status, strict_json(await resp.read())


def _check_json_answer(status: int, content_type: str, raw: bytes, what: str) -> None:
    expect(status < 500 or status == 503, f"{what}: status {status}: {raw[:300]!r}")
    if status >= 400 or raw:
        expect(
            content_type == "application/json", f"{what}: {status} as {content_type}: {raw[:120]!r}"
        )
        body = strict_json(raw)
        if status >= 400:
            expect(isinstance(body, dict), f"{what}: error body is not an object")
            expect(
                isinstance(body.get("error"), str) and isinstance(body.get("message"), str),
                f"{what}: error body without error/message: {raw[:300]!r}",
            )
            if status == 503:  # deliberate back-pressure only, never a failure in disguise
                expect(body["error"] in ("over_capacity", "draining"), f"{what}: 503 {body}")


class _BridgeOnSimSurface(Surface):
    """A bridge with route `live` on the simulated VG endpoint and route `r` on a closed port."""

    async def setup(self) -> None:
        self.sim = VGEndpointSim(command_delay=0.001)
        await self.sim.start()
        fast = {"turn_settle_ms": 10, "turn_timeout_ms": 2000}
        self.bridge = _RunningBridge()
        await self.bridge.start(
            _config(
                {
                    "r": {"token": TOKEN, "voicegateway": {"url": CLOSED_VG}, **fast},
                    "live": {
                        "token": TOKEN,
                        "voicegateway": {"url": self.sim.url("support")},
                        **fast,
                    },
                }
            )
        )

    async def teardown(self) -> None:
        await self.bridge.reap()
        await self.bridge.stop()
        await self.sim.stop()


class HttpSurface(_BridgeOnSimSurface):
    """The VAIC-facing HTTP routes with hostile paths, headers and bodies; a good call keeps
    being served alongside."""

    name = "http"
    GOOD_CALL_EVERY = 1

    def cases(self) -> st.SearchStrategy[Any]:
        return st.fixed_dictionaries(
            {
                "route": st.sampled_from(["r", "live"]),
                "start": st.none() | st.just(START) | S.start_activity,
                "requests": st.lists(S.http_request(), min_size=1, max_size=4),
            }
        )

    async def setup(self) -> None:
        await super().setup()
        self.examples = 0
        self.good = str(uuid.uuid4())
        await self._good_start(self.good)

    async def _good_start(self, conversation: str) -> None:
        status, body = await self.bridge.post("/ac/live", {"conversation": conversation})
        expect(status == 200, f"good call: create answered {status} {body}")
        status, body = await self.bridge.post(
            f"/ac/live/conversation/{conversation}/activities",
            {"activities": [{"id": str(uuid.uuid4()), **START}]},
        )
        texts = [a.get("text") for a in body.get("activities", [])]
        expect(status == 200 and "Welcome to ACME support." in texts, f"good call start: {body}")

    async def _good_turn(self, conversation: str) -> None:
        message = {"id": str(uuid.uuid4()), "type": "message", "text": "hello"}
        status, body = await self.bridge.post(
            f"/ac/live/conversation/{conversation}/activities", {"activities": [message]}
        )
        texts = [a.get("text") for a in body.get("activities", [])]
        expect(status == 200 and "You said hello." in texts, f"good call turn: {status} {body}")

    async def _good_call(self) -> None:
        conversation = str(uuid.uuid4())
        await self._good_start(conversation)
        await self._good_turn(conversation)
        status, _ = await self.bridge.post(f"/ac/live/conversation/{conversation}/disconnect", {})
        expect(status == 200, f"good call disconnect: {status}")

    async def check(self, case: dict[str, Any]) -> None:
        self.examples += 1
        route = case["route"]
        own = str(uuid.uuid4())
        status, body = await self.bridge.post(f"/ac/{route}", {"conversation": own})
        expect(status == 200, f"create: {status} {body}")
        if case["start"] is not None:
            start = json.loads(S.dumps(case["start"]))
            raw = S.dumps({"activities": [start]}).encode("utf-8", "surrogatepass")
            await self._send(f"/ac/{route}/conversation/{own}/activities", "POST", AUTH, raw)
        hostile = asyncio.gather(*(self._request(r, route, own) for r in case["requests"]))
        await asyncio.gather(hostile, self._good_turn(self.good))
        if self.examples % self.GOOD_CALL_EVERY == 0:
            await self._good_call()
        await self.bridge.reap(keep={("live", self.good)})
        self.sim.calls.clear()  # the simulator records every message; cases must not pile up

    async def _send(
        self,
        path: str,
        method: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> None:
        url = URL(self.bridge.url + path, encoded=True)
        what = f"{method} {path[:200]}"
        beyond_parser = _beyond_parser(path, headers)
        async with self.bridge.hostile.request(
            method, url, data=body, headers=headers, skip_auto_headers=("Content-Type",)
        ) as resp:
            raw = await resp.read()
            # aiohttp's HTTP layer answers in plain text for what never reaches the application
            # (over its parser's limits, a body its Content-Encoding does not decode; the
            # parser may fail before the handler reads the body, depending on timing).
            by_aiohttp = resp.content_type == "text/plain" and (
                beyond_parser or _encoded(headers) or raw.startswith(AIOHTTP_PARSER_REFUSALS)
            )
            if method == "HEAD" or by_aiohttp:
                expect(resp.status < 500, f"{what}: status {resp.status}")
                return
            _check_json_answer(resp.status, resp.content_type, raw, what)

    async def _request(self, request: dict[str, Any], route: str, own: str) -> None:
        op = request["op"]
        route_part = {"own": route, "nope": "nope"}.get(request["route"])
        if route_part is None:
            route_part = quote(request["route"], safe="", errors="surrogatepass")
        conversation = {"own": own, "unknown": f"unknown-{uuid.uuid4()}"}.get(
            request["conversation"]
        )
        if conversation is None:
            conversation = quote(request["conversation"], safe="", errors="surrogatepass")
        base = f"/ac/{route_part}"
        path = {
            "create": base,
            "probe": base,
            "activities": f"{base}/conversation/{conversation}/activities",
            "refresh": f"{base}/conversation/{conversation}/refresh",
            "disconnect": f"{base}/conversation/{conversation}/disconnect",
            "websocket": f"{base}/conversation/{conversation}/websocket",
        }.get(op)
        if path is None:
            segments = request.get("path", [])
            path = "/" + "/".join(quote(p, safe="", errors="surrogatepass") for p in segments)
        method = request["method"] or ("GET" if op in ("probe", "websocket", "raw") else "POST")
        headers = dict(request["headers"])
        auth = {"good": AUTH["Authorization"], "none": None, "wrong": "Bearer nope"}.get(
            request["auth"], "Basic tok" if request["auth"] == "basic" else request["auth"]
        )
        if auth is not None:
            headers["Authorization"] = auth
        body = request["body"]
        if body is not None:
            body = body.replace(S.OWN.encode(), own.encode())
        try:
            if op == "websocket" and method == "GET":
                await self._websocket(path, headers, request.get("frames", []), own)
            else:
                await self._send(path, method, headers, body)
        except aiohttp.ClientResponseError:
            # aiohttp's client cannot always read aiohttp's server's plain-text refusal of a
            # request its parser refused ("Data after Connection: close", e.g. after a HEAD).
            if not (_beyond_parser(path, headers) or _encoded(headers)):
                raise

    async def _websocket(
        self, path: str, headers: dict[str, str], frames: list[dict[str, Any]], own: str
    ) -> None:
        url = URL(self.bridge.url.replace("http", "ws", 1) + path, encoded=True)
        headers = {k: v for k, v in headers.items() if k.lower() not in _WS_OWN_HEADERS}
        try:
            ws = await self.bridge.hostile.ws_connect(url, headers=headers, autoping=True)
        except aiohttp.WSServerHandshakeError as exc:
            expect(exc.status != 500, f"push socket upgrade {path[:200]}: {exc.status}")
            return
        async with ws:
            with contextlib.suppress(ConnectionError):
                for frame in frames:
                    await _send_frame(ws, frame, own)


def _beyond_parser(path: str, headers: dict[str, str]) -> bool:
    return len(path) > PARSER_LIMIT or any(
        len(f"{k}: {v}".encode()) > PARSER_LIMIT for k, v in headers.items()
    )


def _encoded(headers: dict[str, str]) -> bool:
    return any(k.lower() == "content-encoding" for k in headers)


AIOHTTP_PARSER_REFUSALS = (b"Got more than ", b"Can not decode content-encoding")


_WS_OWN_HEADERS = {"upgrade", "connection", "sec-websocket-version"}


async def _send_frame(ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any], own: str) -> None:
    if "text" in frame:
        text = frame["text"].replace(S.OWN, own)
        # aiohttp's client encodes strictly; lone surrogates go out as the bytes a sloppy peer
        # would send (a binary frame carrying them).
        try:
            await ws.send_str(text)
        except UnicodeEncodeError:
            await ws.send_bytes(text.encode("utf-8", "surrogatepass"))
    else:
        await ws.send_bytes(frame["binary"].replace(S.OWN.encode(), own.encode()))


ALLOWED_WS_TYPES = {"session.accepted", "session.error", "connection.validated", "activities"}


class AcWebSocketSurface(_BridgeOnSimSurface):
    """Hostile frames on a VAIC WebSocket-mode socket (`GET /ac/R` upgrade)."""

    name = "ac_ws"

    def cases(self) -> st.SearchStrategy[Any]:
        return S.ac_ws_case

    async def check(self, case: dict[str, Any]) -> None:
        assert self.bridge.http is not None
        own = str(uuid.uuid4())
        url = self.bridge.url.replace("http", "ws", 1) + f"/ac/{case['route']}"
        ws = await self.bridge.http.ws_connect(url, headers=AUTH, max_msg_size=0)
        seen: list[dict[str, Any]] = []
        validated = asyncio.Event()
        closed = asyncio.Event()

        async def read() -> None:
            async for msg in ws:
                expect(msg.type == aiohttp.WSMsgType.TEXT, f"bridge sent a {msg.type} frame")
                message = strict_json(msg.data)
                expect(isinstance(message, dict), f"bridge sent a non-object: {msg.data[:200]}")
                expect(message.get("type") in ALLOWED_WS_TYPES, f"bridge sent {msg.data[:200]}")
                seen.append(message)
                if message["type"] == "connection.validated":
                    validated.set()
            closed.set()

        reader = asyncio.create_task(read())
        try:
            with contextlib.suppress(ConnectionError):
                await self._prefix(ws, case["prefix"], own, seen)
                for frame in case["frames"]:
                    await _send_frame(ws, frame, own)
                await self._answered_or_closed(ws, validated, closed)
                if case["end"] and not closed.is_set():
                    # Ends a live call (close 1000); ignored on a socket without one.
                    await ws.send_json({"type": "session.end", "reasonCode": "client-disconnected"})
                    await self._answered_or_closed(ws, validated, closed)
        finally:
            if not closed.is_set():
                await ws.close()
            await reader
        if ws.close_code is not None and closed.is_set():
            # 1009: a frame over aiohttp's max_msg_size (4 MiB), refused by aiohttp itself
            expect(ws.close_code in (1000, 1008, 1009), f"closed with {ws.close_code}")
        await self.bridge.reap()
        self.sim.calls.clear()

    async def _answered_or_closed(
        self, ws: aiohttp.ClientWebSocketResponse, validated: asyncio.Event, closed: asyncio.Event
    ) -> None:
        """The socket still serves: a `connection.validate` is answered, or it was closed."""
        if ws.closed or closed.is_set():
            return
        validated.clear()
        await ws.send_json({"type": "connection.validate"})
        waits = [asyncio.create_task(validated.wait()), asyncio.create_task(closed.wait())]
        done, pending = await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        expect(bool(done), "the socket neither answered connection.validate nor closed")

    async def _prefix(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        prefix: str,
        own: str,
        seen: list[dict[str, Any]],
    ) -> None:
        if prefix == "none":
            return
        initiate = {
            "type": "session.initiate",
            "conversationId": own,
            "expectAudioMessages": False,
            "supportedMediaFormats": ["raw/lpcm16"],
        }
        await ws.send_json(initiate)
        await _until(lambda: any(m["type"] == "session.accepted" for m in seen), "accepted")
        if prefix == "start":
            start = {"id": str(uuid.uuid4()), **START}
            await ws.send_json({"type": "activities", "conversationId": own, "activities": [start]})
            await _until(lambda: any(m["type"] == "activities" for m in seen), "start answer")


async def _until(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        expect(time.monotonic() < deadline, f"no {what} within {timeout} s")
        await asyncio.sleep(0.002)


# ---- jambonz ---------------------------------------------------------------------------------

ALLOWED_VG_EVENTS = (
    vge.SessionAccepted,
    vge.VerbExecuted,
    vge.StackIdle,
    vge.AckTimedOut,
    vge.CloseRequested,
    vge.FrameRejected,
    vge.CommandIgnored,
)
SESSION_NEW_DATA = {
    "call_sid": "fuzz-call",
    "direction": "inbound",
    "from": "+4921154591991",
    "to": "+4930111000",
    "call_status": "trying",
}


def _fill(text: str, msgid: str, call_sid: str) -> str:
    return text.replace(S.MSGID, msgid).replace(S.CALL_SID, call_sid)


def _check_to_app(message: Any) -> None:
    """A frame the bridge sends to the jambonz app: an object with the envelope, strict JSON."""
    expect(isinstance(message, dict), f"non-object to the app: {message!r:.200}")
    expect(
        {"type", "msgid", "call_sid", "data"} <= message.keys(),
        f"incomplete envelope: {sorted(message)}",
    )
    try:
        json.dumps(message, allow_nan=False)
    except ValueError as exc:
        raise FuzzFailure(f"frame to the app is not JSON: {exc}") from None


class JambonzSurface(Surface):
    """Hostile app frames into the pure `CallProtocol`, acks aimed at real msgids."""

    name = "jambonz"

    def cases(self) -> st.SearchStrategy[Any]:
        return S.jambonz_case

    async def check(self, case: dict[str, Any]) -> None:
        proto = vg_protocol.CallProtocol("fuzz-call", input_hook="voice", now=0.0)
        now = 0.0
        proto.start(dict(SESSION_NEW_DATA), now)
        msgid = ""

        def drain() -> None:
            nonlocal msgid
            for event in proto.events_received():
                expect(isinstance(event, ALLOWED_VG_EVENTS), f"unexpected event {event!r:.200}")
                if isinstance(event, vge.VerbExecuted):
                    expect(isinstance(event.verb.get("verb"), str), f"verb {event.verb!r:.200}")
            for message in proto.messages_to_send():
                _check_to_app(message)
                if message["type"] in ("session:new", "verb:hook"):
                    msgid = message["msgid"]

        drain()
        inputs = list(case["inputs"])
        for frame in [*case["session_new"], *case["later"]]:
            now += 0.1
            if "text" in frame:
                proto.receive_text(_fill(frame["text"], msgid, "fuzz-call"), now)
            elif "binary" in frame:
                proto.receive_text(frame["binary"], now)
            drain()
            if inputs:
                kind = HookKind(inputs.pop(0))
                proto.send_input(kind, {"reason": "speechDetected", "speech": {}}, now)
                drain()
        proto.tick(now + 60)
        drain()
        proto.end("caller", now + 61)
        drain()
        expect(proto.ended, "end() did not end the protocol")


class _HostileApp:
    """A jambonz WS app server that answers the bridge from the current case's script."""

    def __init__(self) -> None:
        self.script: dict[str, Any] = {"session_new": [], "hooks": []}
        self.received: list[Any] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"ws://127.0.0.1:{self._runner.addresses[0][1]}/app"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("ws.jambonz.org",), max_msg_size=0)
        await ws.prepare(request)
        hooks = 0
        async for msg in ws:
            self.received.append(msg.data if msg.type is aiohttp.WSMsgType.TEXT else msg)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                message = json.loads(msg.data)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("type") == "session:new":
                replies = self.script["session_new"]
            elif message.get("type") == "verb:hook":
                scripts = self.script["hooks"]
                replies = scripts[hooks] if hooks < len(scripts) else [S.EMPTY_ACK]
                hooks += 1
            else:
                continue
            msgid = str(message.get("msgid"))
            call_sid = str(message.get("call_sid"))
            for reply in replies:
                if ws.closed:
                    break
                if "close" in reply:
                    await ws.close(code=reply["close"])
                elif "text" in reply:
                    text = _fill(reply["text"], msgid, call_sid)
                    try:
                        await ws.send_str(text)
                    except UnicodeEncodeError:
                        await ws.send_bytes(text.encode("utf-8", "surrogatepass"))
                else:
                    await ws.send_bytes(reply["binary"])
        return ws


class VoiceGatewayPathSurface(Surface):
    """A hostile jambonz app behind a real call: VAIC must always get an answer."""

    name = "vg_path"

    def cases(self) -> st.SearchStrategy[Any]:
        return S.vg_path_case

    async def setup(self) -> None:
        # CallProtocol reads its module's ACK_TIMEOUT_S at each send
        self._saved_ack = vg_protocol.__dict__["ACK_TIMEOUT_S"]
        vg_protocol.__dict__["ACK_TIMEOUT_S"] = FUZZ_ACK_TIMEOUT_S
        self.app = _HostileApp()
        url = await self.app.start()
        self.bridge = _RunningBridge()
        route = {"token": TOKEN, "turn_settle_ms": 10, "turn_timeout_ms": 1500}
        await self.bridge.start(_config({"vg": {**route, "voicegateway": {"url": url}}}))

    async def teardown(self) -> None:
        await self.bridge.reap()
        await self.bridge.stop()
        await self.app.stop()
        vg_protocol.__dict__["ACK_TIMEOUT_S"] = self._saved_ack

    async def check(self, case: dict[str, Any]) -> None:
        self.app.script = case
        self.app.received = []
        own = str(uuid.uuid4())
        status, body = await self.bridge.post("/ac/vg", {"conversation": own})
        expect(status == 200, f"create: {status}")
        turns = [[{"id": str(uuid.uuid4()), **START}], *case["inputs"]]
        for index, activities in enumerate(turns):
            status, body = await self.bridge.post(
                f"/ac/vg/conversation/{own}/activities", {"activities": activities}
            )
            if index == 0:
                expect(status == 200, f"start turn answered {status}: {body}")
            else:
                expect(status in (200, 400, 413), f"turn {index} answered {status}: {body}")
            if status == 200:
                expect(
                    isinstance(body, dict) and isinstance(body.get("activities"), list),
                    f"turn {index}: answer without activities: {body!r:.300}",
                )
        if case["disconnect"]:
            status, body = await self.bridge.post(f"/ac/vg/conversation/{own}/disconnect", {})
            expect(status == 200, f"disconnect answered {status}: {body}")
        await self.bridge.reap()
        for frame in self.app.received:
            expect(isinstance(frame, str), f"bridge sent a non-text frame {frame!r:.100}")
            _check_to_app(strict_json(frame))


# ---- config and mapping files ----------------------------------------------------------------


class ConfigSurface(Surface):
    """Mutated configuration text: a Config, or a ConfigError naming path and reason."""

    name = "config"

    def cases(self) -> st.SearchStrategy[Any]:
        return S.config_case()

    async def check(self, case: dict[str, Any]) -> None:
        try:
            config = parse_config(case["text"], file="fuzz.yaml", env=case["env"])
        except ConfigError as exc:
            expect(isinstance(exc.path, str) and bool(exc.path), f"empty path: {exc}")
            expect(isinstance(exc.reason, str) and bool(exc.reason), f"empty reason: {exc}")
            expect(exc.file == "fuzz.yaml", f"file not named: {exc}")
            return
        except Exception as exc:
            raise FuzzFailure(f"parse_config raised {type(exc).__name__}: {exc}"[:500]) from exc
        expect(isinstance(config, Config) and bool(config.routes), "no routes in a valid config")


SAMPLE_ACTIVITIES: list[dict[str, Any]] = [
    {"type": "event", "name": "start", "parameters": dict(S.START_PARAMS)},
    {"type": "message", "text": "hello"},
    {"type": "event", "name": "DTMF", "value": "1"},
    {"type": "event", "name": "noUserInput"},
    {"type": "event", "name": "conversationEnd", "parameters": {"reasonCode": "x"}},
]
SAMPLE_CTX: dict[str, Any] = {
    "route": "r",
    "call_sid": "c",
    "conversation_id": "v",
    "account_sid": "a",
    "application_sid": "b",
    "caller_e164": None,
    "number_metadata": None,
    "sip_headers": {},
    "language": "en-US",
    "transfer_verb": None,
    "default_region": None,
}


class MappingSurface(Surface):
    """Mutated copies of the shipped mapping files: MappingError items, or a working set."""

    name = "mapping"

    def cases(self) -> st.SearchStrategy[Any]:
        return S.mapping_case()

    async def setup(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="fuzz-mappings-"))
        self.directory = self._tmp / "mappings"
        shutil.copytree(SHIPPED_DIR, self.directory, ignore=shutil.ignore_patterns("*.md"))

    async def teardown(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    async def check(self, case: dict[str, Any]) -> None:
        written = []
        try:
            for name, text in case["files"].items():
                path = self.directory / name
                written.append(path)
                if text is None:
                    path.unlink(missing_ok=True)
                else:
                    path.write_bytes(text.encode("utf-8", "surrogatepass"))
            self._check_directory()
        finally:
            for path in written:
                original = S.SHIPPED_MAPPINGS.get(path.name)
                if original is None:
                    path.unlink(missing_ok=True)
                else:
                    path.write_text(original, encoding="utf-8")

    def _check_directory(self) -> None:
        try:
            errors = check_mappings(self.directory)
        except Exception as exc:
            raise FuzzFailure(f"check_mappings raised {type(exc).__name__}: {exc}"[:500]) from exc
        expect(isinstance(errors, list), "check_mappings did not return a list")
        for error in errors:
            expect(isinstance(error, MappingError), f"not a MappingError: {error!r}")
            for part in (error.file, error.path, error.reason):
                expect(isinstance(part, str) and bool(part), f"incomplete error: {error}")
        loaded: MappingSet | None = None
        try:
            loaded = load_mappings(self.directory)
        except MappingError:
            pass
        except Exception as exc:
            raise FuzzFailure(f"load_mappings raised {type(exc).__name__}: {exc}"[:500]) from exc
        expect((loaded is None) == bool(errors), "load_mappings and check_mappings disagree")
        if loaded is not None:
            engine = Engine(loaded)
            for verb in S.GOOD_VERBS:
                engine.verb_to_activities(verb, SAMPLE_CTX)
            for activity in SAMPLE_ACTIVITIES:
                engine.activity_to_voicegateway(activity, SAMPLE_CTX)
                loaded.node_for_activity(activity)


SURFACES: dict[str, type[Surface]] = {
    surface.name: surface
    for surface in (
        HttpSurface,
        AcWebSocketSurface,
        JambonzSurface,
        VoiceGatewayPathSurface,
        ConfigSurface,
        MappingSurface,
    )
}


# ---- running ---------------------------------------------------------------------------------


@dataclass
class FuzzReport:
    surface: str
    cases: int = 0
    seconds: float = 0.0
    failures: list[tuple[Any, str]] = field(default_factory=list)  # the first KEPT_FAILURES
    failed: int = 0

    def record(self, case: Any, reason: str) -> None:
        self.failed += 1
        if len(self.failures) < KEPT_FAILURES:
            self.failures.append((case, reason))


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    """Bad input is logged at WARNING by design; keep the fuzz output readable."""
    logger = logging.getLogger()
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def fuzz(
    surface: Surface,
    max_examples: int,
    *,
    collect: bool = False,
    corpus: list[Any] | None = None,
    generate: bool = True,
    random_seed: int | None = None,
    shrink: bool = True,
    progress: bool = False,
) -> FuzzReport:
    """Run `surface` on `max_examples` generated cases (after the `corpus` cases).

    `collect=False` raises on the first failure (hypothesis shrinks it and reports the minimal
    case); `collect=True` records every failing case and carries on, for counting.
    """
    report = FuzzReport(surface.name)
    started = time.monotonic()
    with asyncio.Runner() as runner, _quiet_warnings():
        loop = runner.get_loop()
        with Guard(loop) as guard:
            runner.run(surface.setup())
            guard.take()

            def one(case: Any) -> None:
                report.cases += 1
                # Hypothesis raises the recursion limit while a test runs; the bridge runs with
                # Python's default, and deep input must be judged against that.
                raised_limit = sys.getrecursionlimit()
                sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)
                try:
                    runner.run(asyncio.wait_for(surface.check(case), CASE_TIMEOUT_S))
                    if report.cases % 500 == 0:
                        gc.collect()
                    problems = guard.take()
                    if problems:
                        raise FuzzFailure("; ".join(problems))
                except Exception as exc:
                    guard.take()
                    if not collect:
                        raise
                    report.record(case, f"{type(exc).__name__}: {exc}"[:1000])
                finally:
                    sys.setrecursionlimit(raised_limit)
                if progress and report.cases % PROGRESS_EVERY == 0:
                    elapsed = time.monotonic() - started
                    print(
                        f"{surface.name}: {report.cases} cases, {report.failed} failing, "
                        f"{elapsed:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )

            phases = [Phase.explicit]
            if generate:
                phases += [Phase.generate]
                if shrink and not collect:
                    phases += [Phase.shrink]
            test = given(surface.cases())(one)
            for case in corpus or []:
                test = example(case)(test)
            test = settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                phases=phases,
                suppress_health_check=list(HealthCheck),
                print_blob=False,
            )(test)
            if random_seed is not None:
                test = seed(random_seed)(test)
            try:
                test()
            finally:
                try:
                    runner.run(surface.teardown())
                finally:
                    gc.collect()
                    leftover = guard.take()
                    if leftover:
                        report.record("(teardown)", "; ".join(leftover))
    report.seconds = time.monotonic() - started
    return report
