"""Load generator: many concurrent simulated VAIC calls, each doing turns, timed per turn.

A call speaks the AudioCodes Bot API in HTTP mode (create, `start`, one activities POST per
turn, disconnect) or in WebSocket mode (`session.initiate`, `activities` messages, `session.end`)
against any bot URL: the simulated legacy bot directly, nginx in front of it, or the bridge. The
flow behind it is the simulators' `support` flow, whose question loops forever (every answer is
echoed and the question asked again), so a call can do any number of turns; a turn ends when the
question's prompt comes back. `vg_direct` drives the simulated Voice Gateway endpoint itself as
the bridge would (`session:new`, then one `verb:hook` per turn), to time the simulator's own part.

Three ways to drive calls: `saturate` (closed loop, every call turns back to back), `paced`
(open loop, the calls together do `rate` turns/s, each at its own fixed interval) and
`open_idle` (create and start calls, then leave them idle).

Each call has its own connection: an `http1.Connection` in HTTP mode, a `websockets` client in
WebSocket mode; both cost far less per request than aiohttp's client, so the load side stays
cheap next to what it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import resource
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bench.http1 import Connection

CALLEE = "+4930111000"  # the `support` flow's number on both simulators
PROMPT = "How can I help you?"
CALLER_BASE = 4915112300000
_caller = itertools.count()
# what a call's request or turn can fail with; OSError includes ConnectionError and TimeoutError
_ERRORS = (OSError, ConnectionClosed, RuntimeError, ValueError)


class Mode(StrEnum):
    HTTP = "http"
    WS = "ws"


@dataclass(frozen=True)
class Target:
    """A bot URL as VAIC is configured with it."""

    bot_url: str
    token: str
    mode: Mode = Mode.HTTP


@dataclass
class Phase:
    """What one driving phase produced: per-turn latencies (seconds) and counts."""

    seconds: float = 0.0
    turns: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    start_latencies: list[float] = field(default_factory=list)
    # the `probe` passed to the driver, read as the turns begin and end (e.g. CPU seconds)
    probed: float = 0.0

    @property
    def rate(self) -> float:
        return self.turns / self.seconds if self.seconds > 0 else 0.0


def _activity(kind: str, **fields: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": kind, **fields}


def _start_event() -> dict[str, Any]:
    caller = f"+{CALLER_BASE + next(_caller)}"
    return _activity("event", name="start", parameters={"caller": caller, "callee": CALLEE})


def _prompted(activities: Any) -> bool:
    return isinstance(activities, list) and any(
        isinstance(a, dict) and a.get("text") == PROMPT for a in activities
    )


def _ws_connect(url: str, **options: Any) -> connect:
    # no compression, no keepalive pings and no proxy from the environment, as aiohttp's client did
    return connect(url, compression=None, ping_interval=None, proxy=None, **options)


async def _ws_recv(ws: ClientConnection) -> Any:
    return orjson.loads(await ws.recv(decode=False))


def _target_of(url: SplitResult) -> str:
    """The request target (path and query) of an absolute URL."""
    path = url.path or "/"
    return f"{path}?{url.query}" if url.query else path


class Call:
    """One simulated VAIC call; `turn()` returns once the flow asked its question again."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.conversation = str(uuid.uuid4())
        self.turns = 0
        url = urlsplit(target.bot_url)
        self._origin = url.netloc
        self._create = _target_of(url)
        self._http = Connection(url.hostname or "127.0.0.1", url.port or 80)
        self._headers = b"Content-Type: application/json\r\nAuthorization: Bearer %s\r\n" % (
            target.token.encode()
        )
        self._paths: dict[str, str] = {}
        self._ws: ClientConnection | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        status, answer = await self._http.request("POST", path, orjson.dumps(body), self._headers)
        if status != 200:
            raise RuntimeError(f"HTTP {status} from {path}")
        return orjson.loads(answer) if answer else None

    async def _ws_turn(self, activities: list[dict[str, Any]]) -> None:
        assert self._ws is not None
        message = {"type": "activities", "conversationId": self.conversation}
        await self._ws.send(orjson.dumps({**message, "activities": activities}), text=True)
        async with asyncio.timeout(10):
            while True:
                frame = await _ws_recv(self._ws)
                if frame.get("type") == "activities" and _prompted(frame.get("activities")):
                    return

    async def start(self) -> float:
        """Open the call and play `start`; returns the seconds until the first prompt."""
        began = time.perf_counter()
        if self.target.mode is Mode.WS:
            url = self.target.bot_url.replace("http", "ws", 1)
            auth = {"Authorization": f"Bearer {self.target.token}"}
            self._ws = await _ws_connect(url, additional_headers=auth)
            initiate = {
                "type": "session.initiate",
                "conversationId": self.conversation,
                "expectAudioMessages": False,
                "supportedMediaFormats": ["raw/lpcm16"],
            }
            await self._ws.send(orjson.dumps(initiate), text=True)
            async with asyncio.timeout(10):
                accepted = await _ws_recv(self._ws)
            if accepted.get("type") != "session.accepted":
                raise RuntimeError(f"session not accepted: {accepted.get('type')}")
            await self._ws_turn([_start_event()])
        else:
            urls = await self._post(self._create, {"conversation": self.conversation})
            for key in ("activitiesURL", "disconnectURL"):
                to = urlsplit(urljoin(self.target.bot_url, str(urls[key])))
                if to.netloc != self._origin:
                    raise RuntimeError(f"{key} on another host: {to.netloc}")
                self._paths[key] = _target_of(to)
            answer = await self._post(
                self._paths["activitiesURL"], {"activities": [_start_event()]}
            )
            if not _prompted(answer.get("activities")):
                raise RuntimeError("no prompt after start")
        return time.perf_counter() - began

    async def turn(self) -> None:
        self.turns += 1
        said = [_activity("message", text=f"turn {self.turns}")]
        if self._ws is not None:
            await self._ws_turn(said)
            return
        answer = await self._post(self._paths["activitiesURL"], {"activities": said})
        if not _prompted(answer.get("activities")):
            raise RuntimeError("no prompt in the turn's answer")

    async def end(self) -> None:
        """Hang up (if the call got that far) and close its connection."""
        with contextlib.suppress(*_ERRORS):
            if self._ws is not None:
                end = {"type": "session.end", "conversationId": self.conversation}
                reason = {"reasonCode": "client-disconnected"}
                await self._ws.send(orjson.dumps({**end, **reason}), text=True)
            elif self._paths:
                await self._post(
                    self._paths["disconnectURL"], {"reasonCode": "client-disconnected"}
                )
        await self.close()

    def rest(self) -> None:
        """Let go of the HTTP connection until the next request (a no-op in WS mode): VAIC pools
        its connections to a bot, so an idle call holds none of its own."""
        self._http.close()

    async def close(self) -> None:
        """Close the call's connection without hanging up."""
        self._http.close()
        if self._ws is not None:
            await self._ws.close()


def raise_fd_limit(needed: int) -> None:
    """Raise this process's soft open-files limit to `needed` (at most to the hard limit): every
    call holds its own socket. Processes started afterwards inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    resource.setrlimit(
        resource.RLIMIT_NOFILE,
        (needed if hard == resource.RLIM_INFINITY else min(needed, hard), hard),
    )


async def _bounded(jobs: list[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await job()

    return await asyncio.gather(*(one(j) for j in jobs), return_exceptions=True)


async def _open(
    target: Target, calls: int, phase: Phase, concurrency: int = 32, rest: bool = False
) -> list[Call]:
    """Start `calls` calls; with `rest`, each lets go of its HTTP connection once started."""
    opened = [Call(target) for _ in range(calls)]

    async def start(call: Call) -> float:
        began = await call.start()
        if rest:
            call.rest()
        return began

    results = await _bounded([functools.partial(start, c) for c in opened], concurrency)
    live = []
    for call, result in zip(opened, results, strict=True):
        if isinstance(result, BaseException):
            phase.errors += 1
            with contextlib.suppress(*_ERRORS):
                await call.close()
        else:
            phase.start_latencies.append(result)
            live.append(call)
    return live


Probe = Callable[[], float]


async def _drive(
    target: Target,
    calls: int,
    seconds: float,
    pace: Callable[[int], float | None],
    probe: Probe | None,
) -> Phase:
    """Open `calls` calls, let each do turns for `seconds` (waiting `pace(i)` s between the
    starts of its turns, None: back to back), then end them. Only the turns are timed."""
    phase = Phase()
    raise_fd_limit(calls + 1024)
    live = await _open(target, calls, phase)
    try:
        before = probe() if probe is not None else 0.0
        began = time.perf_counter()
        deadline = began + seconds

        async def run(index: int, call: Call) -> None:
            interval = pace(len(live))
            # spread the calls' first turns over one interval so the rate is even
            due = began + (interval * index / len(live) if interval else 0.0)
            while True:
                now = time.perf_counter()
                if interval:
                    if due > now:
                        await asyncio.sleep(due - now)
                    due = max(due + interval, time.perf_counter())
                sent = time.perf_counter()
                if sent >= deadline:
                    return
                try:
                    await call.turn()
                except _ERRORS:
                    phase.errors += 1
                    return
                phase.latencies.append(time.perf_counter() - sent)
                phase.turns += 1

        await asyncio.gather(*(run(i, c) for i, c in enumerate(live)))
        phase.seconds = time.perf_counter() - began
        phase.probed = probe() - before if probe is not None else 0.0
    finally:
        await _bounded([c.end for c in live], 32)
    return phase


async def saturate(target: Target, calls: int, seconds: float, probe: Probe | None = None) -> Phase:
    """Closed loop: every call turns back to back; `phase.rate` is the throughput."""
    return await _drive(target, calls, seconds, lambda n: None, probe)


async def paced(
    target: Target, calls: int, rate: float, seconds: float, probe: Probe | None = None
) -> Phase:
    """Open loop: `calls` calls doing `rate` turns/s together, each every `calls/rate` s."""
    return await _drive(target, calls, seconds, lambda n: n / rate, probe)


@dataclass
class IdleCalls:
    """Calls opened and left idle; `end()` hangs them up."""

    phase: Phase
    calls: list[Call]

    async def turn_each(self, rate: float) -> int:
        """One turn on every call, `rate` turns/s overall; returns the turns done."""
        done = 0
        began = time.perf_counter()

        async def one(index: int, call: Call) -> None:
            nonlocal done
            await asyncio.sleep(max(0.0, began + index / rate - time.perf_counter()))
            with contextlib.suppress(*_ERRORS):
                await call.turn()
                done += 1

        await asyncio.gather(*(one(i, c) for i, c in enumerate(self.calls)))
        return done

    async def end(self) -> None:
        await _bounded([c.end for c in self.calls], 32)


async def open_idle(target: Target, calls: int, concurrency: int = 32) -> IdleCalls:
    """Create and start `calls` calls (their first prompt answered) and leave them idle."""
    raise_fd_limit(calls + 1024)
    phase = Phase()
    began = time.perf_counter()
    live = await _open(target, calls, phase, concurrency, rest=True)
    phase.seconds = time.perf_counter() - began
    return IdleCalls(phase, live)


async def vg_direct(ws_url: str, calls: int, rate: float, seconds: float) -> Phase:
    """Time the simulated VG endpoint alone: `session:new` acks (`start_latencies`) and, over
    `calls` sockets doing `rate` hooks/s together, each `verb:hook` answered (`latencies`)."""
    phase = Phase()
    msgids = itertools.count()

    async def ask(ws: ClientConnection, message: dict[str, Any]) -> Any:
        msgid = str(next(msgids))
        await ws.send(orjson.dumps({**message, "msgid": msgid}), text=True)
        async with asyncio.timeout(10):
            while True:
                reply = await _ws_recv(ws)
                if reply.get("type") == "ack" and reply.get("msgid") == msgid:
                    return reply.get("data") or []

    def hook_of(verbs: list[dict[str, Any]]) -> str:
        return next(str(v["actionHook"]) for v in verbs if v.get("verb") == "gather")

    sockets: list[tuple[ClientConnection, str]] = []
    hooks = []
    try:
        for _ in range(calls):
            ws = await _ws_connect(ws_url, subprotocols=[Subprotocol("ws.jambonz.org")])
            sid = str(uuid.uuid4())
            sockets.append((ws, sid))
            began = time.perf_counter()
            verbs = await ask(
                ws,
                {
                    "type": "session:new",
                    "call_sid": sid,
                    "data": {"call_sid": sid, "to": CALLEE, "from": "+4915112300000"},
                },
            )
            phase.start_latencies.append(time.perf_counter() - began)
            hooks.append(hook_of(verbs))
        interval = calls / rate
        began = time.perf_counter()
        deadline = began + seconds

        async def run(index: int) -> None:
            ws, sid = sockets[index]
            due = began + interval * index / calls
            turn = 0
            while True:
                if due > time.perf_counter():
                    await asyncio.sleep(due - time.perf_counter())
                due = max(due + interval, time.perf_counter())
                sent = time.perf_counter()
                if sent >= deadline:
                    return
                turn += 1
                speech = {"is_final": True, "alternatives": [{"transcript": f"turn {turn}"}]}
                verbs = await ask(
                    ws,
                    {
                        "type": "verb:hook",
                        "call_sid": sid,
                        "hook": hooks[index],
                        "data": {"reason": "speechDetected", "speech": speech},
                    },
                )
                hooks[index] = hook_of(verbs)
                phase.latencies.append(time.perf_counter() - sent)
                phase.turns += 1

        await asyncio.gather(*(run(i) for i in range(calls)))
        phase.seconds = time.perf_counter() - began
    finally:
        for ws, _ in sockets:
            await ws.close()
    return phase
