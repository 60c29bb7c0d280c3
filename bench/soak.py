"""Soak: hundreds of concurrent simulated calls through the bridge while upstream faults come and
go, every turn and output checked by a ledger (bench/ledger.py).

Three processes on loopback, bounded in time and count: the simulators (a legacy AudioCodes
endpoint, the Voice Gateway endpoint the bridge's calls use, a second one that serves only
shadows, and a control port to inject faults), the bridge (`python -m bridge serve`, its CPU and
RSS read from /proc), and this load generator. Three routes, shadow on everywhere:
`split_sync` (HTTP sync) and `split_async` (HTTP async, push socket) send half the callers to
each path; `slow_shadow` serves legacy and shadows onto the second VG endpoint. Faults, one after
the other: that VG endpoint answers late (slow shadow), the VG endpoint is killed and restarted
(sockets dropped without a close frame, the port refusing connections meanwhile, session state
kept), the legacy endpoint answers 503 to everything.

    python -m bench.soak [--calls 500] [--duration 60] [--seed 1] [--instances 1]

With `--instances N` (N > 1) the bridge is a fleet as deployed: one redis-server, N `acvg-bridge
serve` instances sharing it (`cluster.redis_url`), nginx with the shipped
deploy/nginx/acvg-bridge.conf in front, and every caller goes through nginx. The faults are then
the fleet's own, one after the other (in place of the upstream faults above): SIGKILL of the
instance holding the most calls (from `GET /admin/cluster`), started again a few seconds later as
a supervisor would; a rolling restart of every instance (SIGTERM, start, wait until /healthz
answers and nginx sends it requests again, next; `--no-lb-wait`: /healthz only); a Redis restart
(stopped and started on the same port, empty: it keeps nothing on disk). The load goes on past
`--duration` until the last fault is over. An async-mode caller connects its push socket again,
through nginx, whenever it closes. The ledger also checks what the upstreams saw: no caller input
forwarded twice, no call offered to the Voice Gateway anew instead of reconnected; and a bridge
hangup is a dropped call (no upstream fault excuses it). Figures are summed over the instances'
lifetimes (a restarted instance's counters start at 0, so each process is scraped before it is
stopped): takeovers, forwarded requests, store errors. `--json FILE` writes the result with
every problem; `--workdir DIR` keeps the configs and logs.

Exit status 0 iff the ledger holds: every turn answered once, never with a 5xx, every output
once and in order, nothing lost outside a fault, every call ended, no live call in the bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bench.ledger import (
    BridgeState,
    EndKind,
    FaultKind,
    FaultWindow,
    Ledger,
    UpstreamState,
    Verdict,
    hangup_reason,
    percentile,
    tag_of,
)
from bench.procs import free_port, wait_http

if TYPE_CHECKING:
    from bridge.sim.fleet import Fleet, Instance
    from bridge.sim.legacy_endpoint import LegacyEndpointSim
    from bridge.sim.redis_server import RedisServer
    from bridge.sim.vg_endpoint import VGEndpointSim

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "soak"
LEGACY_TOKEN = "soak-legacy"
ROUTES = {"split_sync": "sync", "split_async": "async", "slow_shadow": "sync"}
# Share of callers per route.
ROUTE_WEIGHTS = {"split_sync": 0.45, "split_async": 0.35, "slow_shadow": 0.2}
# Reconnect budget of the bridge after the VG endpoint comes back (backoff 0.5, 1, 2, 4 s).
VG_GRACE = 8.0
ASYNC_WAIT = 15.0
REQUEST_TIMEOUT = 15.0
# Fleet runs: the instances' admin token (GET /admin/cluster), the paths an instance killed
# mid-turn may cut, and the first and longest wait between connects of a push socket.
FLEET_ADMIN_TOKEN = "soak-admin"
BOTH_PATHS = frozenset({"legacy", "voicegateway"})
PUSH_RETRY_S = (0.1, 1.0)
FLEET_FAULTS = ("kill", "rolling", "redis")

SOAK_FLOW: dict[str, Any] = {
    "name": "soak",
    "nodes": [
        {"id": "hello", "type": "say", "text": "t0 p1"},
        {
            "id": "ask0",
            "type": "question",
            "prompt": "t0 p2",
            "branches": [{"contains": "bye", "next": "bye"}, {"default": True, "next": "echo"}],
        },
        {"id": "echo", "type": "say", "text": "{{input.text}} p1"},
        {
            "id": "ask",
            "type": "question",
            "prompt": "{{input.text}} p2",
            "branches": [{"contains": "bye", "next": "bye"}, {"default": True, "next": "echo"}],
        },
        {"id": "bye", "type": "say", "text": "{{input.text}} p1"},
        {"id": "end", "type": "hangup", "reason": "soak-done"},
    ],
}


@dataclass(frozen=True)
class Schedule:
    """Fault windows, seconds after the load starts."""

    slow_shadow: tuple[float, float]
    vg_kill: tuple[float, float]
    legacy_503: tuple[float, float]
    shadow_delay: float = 1.5


@dataclass(frozen=True)
class FleetSchedule:
    """A fleet run's faults, seconds after the load starts (None: not this one); each begins
    once the one before it is over."""

    kill: float | None  # SIGKILL of the instance holding the most calls ...
    revive: float  # ... started again this long after the kill (past its lease: taken over)
    rolling: float | None  # every instance in turn: SIGTERM, start, wait healthy
    redis: float | None  # redis-server stopped ...
    redis_down: float = 1.0  # ... and started on the same port this long after
    # "healthy" includes: nginx sends it requests again. Without it the next SIGTERM may come
    # while nginx still leaves the last one out (fail_timeout), and then it has none to use.
    lb_wait: bool = True

    @classmethod
    def scaled(
        cls,
        duration: float,
        lease_s: float = 3.0,
        *,
        lb_wait: bool = True,
        faults: Sequence[str] = FLEET_FAULTS,
    ) -> FleetSchedule:
        """The 60-second schedule stretched or squeezed to `duration`, with the `faults` named
        (FLEET_FAULTS); the killed instance stays down until its lease has lapsed, so that its
        calls are taken over."""
        k = duration / 60.0
        return cls(
            10.0 * k if "kill" in faults else None,
            max(5.0 * k, lease_s + 2),
            22.0 * k if "rolling" in faults else None,
            45.0 * k if "redis" in faults else None,
            max(0.5, 2.0 * k),
            lb_wait,
        )


@dataclass(frozen=True)
class SoakOptions:
    calls: int = 500  # concurrent callers
    duration: float = 60.0
    think: tuple[float, float] = (1.0, 3.0)
    turns: tuple[int, int] = (3, 8)
    ramp: float = 3.0
    seed: int = 1
    schedule: Schedule | None = field(
        default_factory=lambda: Schedule((8.0, 18.0), (24.0, 27.0), (38.0, 44.0))
    )
    # above 1: a fleet sharing a redis-server behind nginx (module docstring)
    instances: int = 1
    fleet_schedule: FleetSchedule | None = field(default_factory=lambda: FleetSchedule.scaled(60))
    lease_s: float = 3.0  # cluster.lease_s of a fleet run
    workdir: Path | None = None  # a fleet run's configs and logs (None: a temporary directory)


@dataclass
class SoakResult:
    verdict: Verdict
    bridge: dict[str, Any]
    sims: dict[str, Any]
    latency_ms: dict[str, dict[str, float]]
    fleet: dict[str, Any] = field(default_factory=dict)  # a fleet run's own figures


# ---------------------------------------------------------------- the simulators' process


def soak_flows() -> dict[str, Any]:
    from bridge.sim.flow import parse_flow

    flow = parse_flow(SOAK_FLOW, "bench/soak.py")
    return {"soak": flow, "soak_async": parse_flow({**SOAK_FLOW, "name": "soak_async"})}


async def serve_sims(control: int, vg: int, shadow_vg: int, legacy: int) -> None:
    """The simulators plus a control server: POST /vg/kill, /vg/restart, /slow?delay=S,
    /legacy?fail=503|none; GET /state gives what the simulators saw."""
    from bridge.sim.legacy_endpoint import LegacyEndpointSim
    from bridge.sim.vg_endpoint import VGEndpointSim

    flows = soak_flows()
    vg_sim = VGEndpointSim(flows, port=vg)
    shadow_sim = VGEndpointSim(flows, port=shadow_vg)
    legacy_sim = LegacyEndpointSim(
        flows, token=LEGACY_TOKEN, async_flows={"soak_async"}, port=legacy
    )
    kills = 0

    async def kill(_: web.Request) -> web.Response:
        nonlocal kills
        kills += 1
        await vg_sim.kill()
        return web.json_response({})

    async def restart(_: web.Request) -> web.Response:
        await vg_sim.restart()
        return web.json_response({})

    async def slow(request: web.Request) -> web.Response:
        shadow_sim.reply_delay = float(request.query.get("delay", "0"))
        return web.json_response({})

    async def fail(request: web.Request) -> web.Response:
        value = request.query.get("fail", "none")
        legacy_sim.fail_with = None if value == "none" else int(value)
        return web.json_response({})

    async def upstream(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "voicegateway": vg_repeats(vg_sim),
                "shadow voicegateway": vg_repeats(shadow_sim),
                "legacy": legacy_repeats(legacy_sim),
            }
        )

    async def state(_: web.Request) -> web.Response:
        def count(sim: VGEndpointSim, kind: str) -> int:
            return sum(len(call.messages(kind)) for call in sim.calls.values())

        return web.json_response(
            {
                "vg_kills": kills,
                "vg_calls": len(vg_sim.calls),
                "vg_session_new": count(vg_sim, "session:new"),
                "vg_session_reconnect": count(vg_sim, "session:reconnect"),
                "shadow_vg_calls": len(shadow_sim.calls),
                "legacy_calls": len(legacy_sim.calls),
                "legacy_503_answers": sum(1 for r in legacy_sim.requests if r.status == 503),
            }
        )

    app = web.Application()
    app.router.add_post("/vg/kill", kill)
    app.router.add_post("/vg/restart", restart)
    app.router.add_post("/slow", slow)
    app.router.add_post("/legacy", fail)
    app.router.add_get("/state", state)
    app.router.add_get("/upstream", upstream)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", control).start()
    async with vg_sim, shadow_sim, legacy_sim:
        await asyncio.Event().wait()


def _hook_input(message: Mapping[str, Any]) -> str:
    """The caller input a `verb:hook` reports: its reason and transcript or digits."""
    data = message.get("data")
    if not isinstance(data, Mapping):
        return ""
    speech = data.get("speech")
    alternatives = speech.get("alternatives") if isinstance(speech, Mapping) else None
    first = alternatives[0] if isinstance(alternatives, list) and alternatives else None
    transcript = first.get("transcript") if isinstance(first, Mapping) else None
    return f"{data.get('reason')}|{transcript}|{data.get('digits')}"


def vg_repeats(sim: VGEndpointSim) -> dict[str, int]:
    """GET /upstream for one VG endpoint: caller inputs hooked twice in one call, callers offered
    in a second `session:new`, and the `session:reconnect`s it accepted."""
    duplicates = reconnects = 0
    callers: Counter[str] = Counter()
    for call in sim.calls.values():
        inputs = [_hook_input(m) for m in call.messages("verb:hook")]
        duplicates += len(inputs) - len(set(inputs))
        reconnects += len(call.messages("session:reconnect"))
        for message in call.messages("session:new"):
            data = message.get("data")
            callers[str(data.get("from") if isinstance(data, Mapping) else None)] += 1
    return {
        "calls": len(sim.calls),
        "duplicate_inputs": duplicates,
        "second_session_new": sum(n - 1 for n in callers.values()),
        "session_reconnect": reconnects,
    }


def legacy_repeats(sim: LegacyEndpointSim) -> dict[str, int]:
    """GET /upstream for the legacy endpoint: caller inputs it received twice in one call under
    different activity ids (the bot ran them twice), and activities POSTs that repeated known
    ids — a retry the Bot API has the bot answer from its record, as it does VAIC's own (what a
    turn in flight at a SIGKILL becomes when its new owner sends it again)."""
    duplicates = 0
    for call in sim.calls.values():
        ids: set[str] = set()
        inputs = []
        for activity in call.received:
            activity_id = activity.get("id")
            if isinstance(activity_id, str):
                if activity_id in ids:
                    continue  # a repeated id: counted in repeated_posts
                ids.add(activity_id)
            inputs.append((activity.get("type"), activity.get("name"), activity.get("text")))
        duplicates += len(inputs) - len(set(inputs))
    return {
        "calls": len(sim.calls),
        "duplicate_inputs": duplicates,
        "repeated_posts": sum(call.duplicates for call in sim.calls.values()),
    }


# ---------------------------------------------------------------- the bridge's process


def config(vg: int, shadow_vg: int, legacy: int) -> dict[str, Any]:
    def route(vg_port: int, flow: str, **extra: Any) -> dict[str, Any]:
        return {
            "token": TOKEN,
            "voicegateway": {"url": f"ws://127.0.0.1:{vg_port}/soak"},
            "legacy": {"url": f"http://127.0.0.1:{legacy}/{flow}", "token": LEGACY_TOKEN},
            **extra,
        }

    split = {"voicegateway_percent": 50, "shadow": True}
    return {
        "routes": {
            "split_sync": route(vg, "soak", migration=split),
            "split_async": route(vg, "soak_async", async_mode=True, migration=split),
            "slow_shadow": route(shadow_vg, "soak", migration={"force": "legacy", "shadow": True}),
        }
    }


class ProcessSampler:
    """CPU (utime+stime) and RSS of one process, sampled from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float, int]] = []  # (wall, cpu seconds, rss bytes)

    def sample(self) -> None:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
            rss = 0
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
            self.samples.append((time.monotonic(), cpu, rss))

    async def run(self, every: float = 1.0) -> None:
        while True:
            self.sample()
            await asyncio.sleep(every)

    def figures(self) -> dict[str, float]:
        if len(self.samples) < 2:
            return {}
        (t0, c0, _), (t1, c1, _) = self.samples[0], self.samples[-1]
        peaks = [
            (b[1] - a[1]) / (b[0] - a[0])
            for a, b in zip(self.samples, self.samples[1:], strict=False)
            if b[0] > a[0]
        ]
        return {
            "cpu_percent_mean": 100 * (c1 - c0) / (t1 - t0),
            "cpu_percent_peak": 100 * max(peaks),
            "rss_mb_peak": max(s[2] for s in self.samples) / 2**20,
            "cpu_seconds": c1 - c0,
        }


def metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def error_lines(log_file: Path) -> int:
    count = 0
    for line in log_file.read_text(errors="replace").splitlines():
        words = line.split()
        if "Traceback" in line or (len(words) > 1 and words[1] in ("ERROR", "CRITICAL")):
            count += 1
    return count


# ---------------------------------------------------------------- the load


class PushFeed:
    """An async-mode call's push socket (`websocketURL`), connected again whenever it closes
    until the call ends: in a fleet the instance serving the call may be killed or drained,
    and the socket then has to reach the instance that continues it (through the load
    balancer, as everything else). Pushed activities go to `into`."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        token: str,
        into: asyncio.Queue[dict[str, Any]],
    ) -> None:
        self.connects = 0
        self.connected = asyncio.Event()
        self._http = http
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"}
        self._into = into
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        wait = PUSH_RETRY_S[0]
        while True:
            try:
                async with self._http.ws_connect(self._url, headers=self._headers) as socket:
                    self._socket = socket
                    self.connects += 1
                    self.connected.set()
                    wait = PUSH_RETRY_S[0]
                    async for message in socket:
                        if message.type is aiohttp.WSMsgType.TEXT:
                            self._receive(message.data)
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass  # refused, reset, or answered without an upgrade: try again
            self._socket = None
            self.connected.clear()
            await asyncio.sleep(wait)
            wait = min(2 * wait, PUSH_RETRY_S[1])

    def _receive(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            return
        activities = frame.get("activities") if isinstance(frame, dict) else None
        for activity in activities if isinstance(activities, list) else []:
            if isinstance(activity, dict):
                self._into.put_nowait(activity)

    async def close(self) -> None:
        """Stop reconnecting and close the socket (before the call's disconnect)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._socket is not None:
            await self._socket.close()


class Load:
    """VAIC: `options.calls` callers, each placing calls back to back until the deadline.
    `keep_push`: async-mode callers keep their push socket connected (a PushFeed)."""

    def __init__(
        self,
        options: SoakOptions,
        base: str,
        control: str,
        routes: Mapping[str, Any],
        ledger: Ledger,
        *,
        keep_push: bool = False,
    ) -> None:
        self.options = options
        self.base = base
        self.control = control
        self.routes = routes
        self.ledger = ledger
        self.keep_push = keep_push
        self.random = random.Random(options.seed)
        self.t0 = 0.0
        self.deadline = 0.0
        self.fleet_busy = False  # the fleet's faults are not over: the load goes on meanwhile
        self.ran = 0.0  # seconds the callers placed calls, with a fleet's faults
        self.counter = 0
        self.push_connects: Counter[str] = Counter()  # "first" and "again", with keep_push

    def now(self) -> float:
        return time.monotonic() - self.t0

    def over(self) -> bool:
        """No new call, and the calls in progress say their last turn."""
        return self.now() >= self.deadline and not self.fleet_busy

    def expected_path(self, route: str, caller: str, conversation: str) -> str:
        from bridge import routing
        from bridge.numbers import number_metadata

        cfg = self.routes[route]
        number = number_metadata(caller, cfg.default_region)
        country = number.metadata.get("country") if number.metadata else None
        return routing.decide(
            route,
            cfg,
            caller=caller,
            callee="+4930111000",
            conversation_id=conversation,
            caller_country=country if isinstance(country, str) else None,
            caller_e164=number.e164,
        ).path

    async def run(self, http: aiohttp.ClientSession, fleet: FleetDriver | None = None) -> None:
        """The load until the deadline, then until every call ended; with `fleet`, also the
        fleet's faults, seen through to the end, the load going on past the deadline until
        they are (a fault is never left half done, nor run against an idle fleet)."""
        self.t0 = time.monotonic()
        self.deadline = self.options.duration
        self.fleet_busy = fleet is not None and self.options.fleet_schedule is not None
        workers = [asyncio.create_task(self.worker(http, n)) for n in range(self.options.calls)]
        faults = asyncio.create_task(self.faults(http))
        fleet_faults = None if fleet is None else asyncio.create_task(self.fleet_faults(fleet))
        try:
            await asyncio.gather(*workers)
            if fleet_faults is not None:
                await fleet_faults
        finally:
            for task in (faults, fleet_faults):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def worker(self, http: aiohttp.ClientSession, n: int) -> None:
        rng = random.Random(self.options.seed * 100_003 + n)
        await asyncio.sleep(rng.uniform(0, self.options.ramp))
        while not self.over():
            self.counter += 1
            await self.call(http, rng, self.counter)

    def pick_route(self, rng: random.Random) -> str:
        x = rng.random()
        for route, weight in ROUTE_WEIGHTS.items():
            if x < weight:
                return route
            x -= weight
        return "split_sync"

    async def call(self, http: aiohttp.ClientSession, rng: random.Random, n: int) -> None:
        from bridge.sim.vaic import VaicClient

        route = self.pick_route(rng)
        mode = ROUTES[route]
        caller = f"+4915{n:09d}"
        client = VaicClient(f"{self.base}/ac/{route}", TOKEN, session=http, timeout=REQUEST_TIMEOUT)
        conversation = str(uuid.uuid4())
        path = self.expected_path(route, caller, conversation)
        try:
            reply = await client.create(conversation)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.ledger.call_created(conversation, route, mode, path, 0, self.now())
            self.ledger.turn_sent(conversation, 0, self.now())
            self.ledger.turn_failed(conversation, 0, f"create: {type(exc).__name__}")
            return
        self.ledger.call_created(
            conversation, route, mode, path, reply.status, self.now(), error=_refusal(reply)
        )
        if reply.status != 200:
            return
        feed: PushFeed | None = None
        try:
            if mode == "async" and self.keep_push:
                feed = await self.push_feed(http, client)
            elif mode == "async":
                await client.open_push_socket()
            await self.converse(client, rng, conversation, caller, mode, feed)
        finally:
            if feed is not None:
                await feed.close()
                self.push_connects["first"] += min(feed.connects, 1)
                self.push_connects["again"] += max(feed.connects - 1, 0)
            await client.close()

    async def push_feed(self, http: aiohttp.ClientSession, client: Any) -> PushFeed | None:
        """A PushFeed for the call, once connected (or after REQUEST_TIMEOUT: outputs that find
        no socket come with the next response)."""
        url = client.urls.websocket if client.urls is not None else None
        if url is None:
            return None
        feed = PushFeed(http, url, TOKEN, client.pushed)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(feed.connected.wait(), REQUEST_TIMEOUT)
        return feed

    async def converse(
        self,
        client: Any,
        rng: random.Random,
        conversation: str,
        caller: str,
        mode: str,
        feed: PushFeed | None = None,
    ) -> None:
        turns = rng.randint(*self.options.turns)
        say_bye = rng.random() < 0.5
        hung_up: str | None = None
        for k in range(turns + 1):
            last = k == turns or self.over()
            bye = last and say_bye and k > 0
            if k == 0:
                activity: dict[str, Any] = {
                    "type": "event",
                    "name": "start",
                    "parameters": {"caller": caller, "callee": "+4930111000"},
                }
            else:
                activity = {"type": "message", "text": f"t{k} bye" if bye else f"t{k}"}
            hung_up = await self.turn(client, conversation, k, activity, bye, mode)
            if hung_up is not None or last:
                break
            await asyncio.sleep(rng.uniform(*self.options.think))
        how = (
            EndKind.CALLER
            if hung_up is None
            else EndKind.FLOW
            if hung_up == "soak-done"
            else EndKind.BRIDGE
        )
        if feed is not None:
            await feed.close()  # the bridge closes it with the call: do not connect it again
        error = ""
        try:
            reply = await client.disconnect()
            status: int | None = reply.status
            error = _refusal(reply)
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, error = 0, type(exc).__name__
        self.ledger.call_ended(conversation, how, status, self.now(), error=error)

    async def turn(
        self,
        client: Any,
        conversation: str,
        k: int,
        activity: dict[str, Any],
        bye: bool,
        mode: str,
    ) -> str | None:
        """One turn; returns the hangup reason if the call was hung up in it."""
        self.ledger.turn_sent(conversation, k, self.now(), bye=bye)
        try:
            reply = await client.send([activity])
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.ledger.turn_failed(conversation, k, type(exc).__name__)
            return None
        self.ledger.turn_answered(
            conversation, k, reply.status, reply.activities, self.now(), error=_refusal(reply)
        )
        hung_up = _hangup_in(reply.activities)
        if mode == "sync" or hung_up is not None:
            return hung_up
        final = (k, 1 if bye else 2)
        if any(tag_of(a) == final for a in reply.activities):
            return None
        until = time.monotonic() + ASYNC_WAIT
        while (left := until - time.monotonic()) > 0:
            try:
                pushed = await asyncio.wait_for(client.pushed.get(), left)
            except TimeoutError:
                break
            self.ledger.outputs(conversation, [pushed], self.now())
            reason = hangup_reason(pushed)
            if reason is not None:
                return reason
            if tag_of(pushed) == final and not bye:
                return None
        return None

    async def faults(self, http: aiohttp.ClientSession) -> None:
        schedule = self.options.schedule
        if schedule is None:
            return
        steps: list[tuple[float, str, FaultKind, bool]] = [
            (
                schedule.slow_shadow[0],
                f"/slow?delay={schedule.shadow_delay}",
                FaultKind.SLOW_SHADOW,
                True,
            ),
            (schedule.slow_shadow[1], "/slow?delay=0", FaultKind.SLOW_SHADOW, False),
            (schedule.vg_kill[0], "/vg/kill", FaultKind.VG_KILLED, True),
            (schedule.vg_kill[1], "/vg/restart", FaultKind.VG_KILLED, False),
            (schedule.legacy_503[0], "/legacy?fail=503", FaultKind.LEGACY_503, True),
            (schedule.legacy_503[1], "/legacy?fail=none", FaultKind.LEGACY_503, False),
        ]
        began: dict[FaultKind, float] = {}
        for at, url, kind, on in sorted(steps, key=lambda s: s[0]):
            await asyncio.sleep(max(0.0, at - self.now()))
            if on:
                began[kind] = self.now()
            async with http.post(self.control + url) as resp:
                resp.raise_for_status()
            if not on:
                cuts = {
                    FaultKind.VG_KILLED: frozenset({"voicegateway"}),
                    FaultKind.LEGACY_503: frozenset({"legacy"}),
                    FaultKind.SLOW_SHADOW: frozenset(),
                }[kind]
                grace = VG_GRACE if kind is FaultKind.VG_KILLED else 2.0
                self.ledger.fault(FaultWindow(kind, began[kind], self.now(), cuts, grace))

    async def fleet_faults(self, fleet: FleetDriver) -> None:
        """The fleet's faults, one after the other. Only the kill may cut a turn: the one in
        flight on the killed instance; a rolling restart and a Redis restart cut nothing."""
        try:
            await self._fleet_faults(fleet)
        finally:
            self.fleet_busy = False
            self.ran = max(self.deadline, self.now())

    async def _fleet_faults(self, fleet: FleetDriver) -> None:
        schedule = self.options.fleet_schedule
        if schedule is None:
            return
        if schedule.kill is not None:
            await asyncio.sleep(max(0.0, schedule.kill - self.now()))
            began = self.now()
            victim = await fleet.kill_busiest()
            window = FaultWindow(FaultKind.INSTANCE_KILLED, began, self.now(), BOTH_PATHS)
            self.ledger.fault(window)
            await asyncio.sleep(schedule.revive)
            await fleet.revive(victim, schedule.lb_wait)
        if schedule.rolling is not None:
            await asyncio.sleep(max(0.0, schedule.rolling - self.now()))
            began = self.now()
            await fleet.rolling_restart(schedule.lb_wait)
            self.ledger.fault(FaultWindow(FaultKind.ROLLING_RESTART, began, self.now()))
        if schedule.redis is not None:
            await asyncio.sleep(max(0.0, schedule.redis - self.now()))
            began = self.now()
            await fleet.restart_redis(schedule.redis_down)
            self.ledger.fault(FaultWindow(FaultKind.REDIS_RESTART, began, self.now()))


def _refusal(reply: Any) -> str:
    """What a bridge reply other than 200 said: its error code and message (design §2.2)."""
    if reply.status == 200:
        return ""
    body = reply.body
    if isinstance(body, dict) and "error" in body:
        return f"{body.get('error')}: {body.get('message')}"
    text = re.sub(r"<[^>]*>", " ", str(reply.text))  # e.g. nginx's own HTML error page
    return " ".join(text.split())[:120]


def _hangup_in(activities: list[dict[str, Any]]) -> str | None:
    for activity in activities:
        reason = hangup_reason(activity)
        if reason is not None:
            return reason
    return None


# ---------------------------------------------------------------- a fleet run's processes


class FleetDriver:
    """The processes of a fleet run and its faults. Keeps every instance process's last
    /metrics (a restarted instance counts from 0 again, so figures are summed over processes)
    and samples the CPU and RSS of the instances and redis-server; `events` says what was done
    to them, at which second of the load (`clock`)."""

    def __init__(
        self,
        fleet: Fleet,
        redis: RedisServer,
        http: aiohttp.ClientSession,
        lb_url: str,
        clock: Callable[[], float],
    ) -> None:
        self.fleet = fleet
        self.redis = redis
        self.http = http
        self.lb_url = lb_url
        self.clock = clock
        self.metrics: dict[tuple[str, int], str] = {}  # (instance, pid) → its last /metrics
        self.samplers: dict[tuple[str, int], ProcessSampler] = {}
        self.events: list[str] = []
        self.victim: dict[str, Any] = {}

    def live(self) -> list[Instance]:
        return [
            i for i in self.fleet.instances if i.process is not None and i.process.poll() is None
        ]

    def bases(self) -> list[str]:
        return [i.url for i in self.live()]

    async def scrape(self, instance: Instance) -> None:
        process = instance.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self.http.get(
                f"{instance.url}/metrics", timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                if resp.status == 200:
                    self.metrics[(instance.name, process.pid)] = await resp.text()

    async def scrape_all(self) -> None:
        await asyncio.gather(*(self.scrape(i) for i in self.live()))

    def sample(self) -> None:
        processes = [(i.name, i.process) for i in self.live()]
        processes.append(("redis", self.redis.process))
        for name, process in processes:
            if process is not None and process.poll() is None:
                key = (name, process.pid)
                self.samplers.setdefault(key, ProcessSampler(process.pid)).sample()

    async def watch(self, every: float = 1.0, scrape_every: int = 2) -> None:
        """Sample every `every` seconds and scrape every `scrape_every` samples, until
        cancelled."""
        n = 0
        while True:
            self.sample()
            if n % scrape_every == 0:
                await self.scrape_all()
            n += 1
            await asyncio.sleep(every)

    async def kill_busiest(self) -> Instance:
        """SIGKILL of the instance holding the most calls, as GET /admin/cluster (through the
        load balancer) says."""
        headers = {"Authorization": f"Bearer {FLEET_ADMIN_TOKEN}"}
        async with self.http.get(f"{self.lb_url}/admin/cluster", headers=headers) as resp:
            resp.raise_for_status()
            status = await resp.json()
        busiest = max(status["instances"], key=lambda i: int(i["calls"]))
        victim = next(i for i in self.fleet.instances if i.name == busiest["id"])
        await self.scrape(victim)
        at = self.clock()
        await asyncio.to_thread(victim.kill)
        calls = sum(int(i["calls"]) for i in status["instances"])
        self.victim = {"instance": victim.name, "calls": int(busiest["calls"]), "of": calls}
        self.events.append(
            f"{at:.1f} s: SIGKILL of {victim.name}, holding {busiest['calls']} of {calls} calls"
        )
        return victim

    async def revive(self, instance: Instance, lb_wait: bool) -> None:
        at = self.clock()
        await asyncio.to_thread(instance.start)
        healthy = self._since(at)
        balanced = f", in nginx's rotation {await self.balanced(instance)}" if lb_wait else ""
        self.events.append(
            f"{at:.1f} s: {instance.name} started again, healthy {healthy}{balanced}"
        )

    async def rolling_restart(self, lb_wait: bool) -> None:
        for instance in self.fleet.instances:
            await self.scrape(instance)
            at = self.clock()
            await asyncio.to_thread(instance.stop)
            process = instance.process
            code = process.returncode if process is not None else None
            stopped = self._since(at)
            await asyncio.to_thread(instance.start)
            healthy = self._since(at)
            balanced = f", in nginx's rotation {await self.balanced(instance)}" if lb_wait else ""
            self.events.append(
                f"{at:.1f} s: SIGTERM to {instance.name}, exited {stopped} (status {code}), "
                f"started again and healthy {healthy}{balanced}"
            )

    async def balanced(self, instance: Instance, timeout: float = 30.0) -> str:
        """Wait until nginx sends `instance` requests again: GET /admin/cluster through nginx
        (hashed on a random request id, so spread over the instances nginx uses) answered by
        it. After a failed connect the shipped conf leaves an instance out for fail_timeout,
        restarted or not. Returns how long since the instance was started (or waited)."""
        headers = {"Authorization": f"Bearer {FLEET_ADMIN_TOKEN}"}
        begun = self.clock()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with self.http.get(f"{self.lb_url}/admin/cluster", headers=headers) as resp:
                    answered = (await resp.json()).get("instance_id") if resp.ok else None
                if answered == instance.name:
                    return self._since(begun)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"nginx sent {instance.name} no request within {timeout:g} s")

    async def restart_redis(self, down: float) -> None:
        at = self.clock()
        await asyncio.to_thread(self.redis.stop)
        await asyncio.sleep(down)
        await asyncio.to_thread(self.redis.start)
        self.events.append(f"{at:.1f} s: redis-server stopped, listening again {self._since(at)}")

    def _since(self, at: float) -> str:
        return f"{self.clock() - at:.1f} s later"

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """The last /metrics of every instance process, one list."""
        return [sample for text in self.metrics.values() for sample in metric_samples(text)]

    def figures(self) -> dict[str, float]:
        """CPU (share of one core, summed over the instances; mean over the load) and peak RSS
        of one instance; redis-server's CPU."""
        bridges = [s for (name, _), s in self.samplers.items() if name != "redis"]
        stores = [s for (name, _), s in self.samplers.items() if name == "redis"]
        spans = [(s.samples[0][0], s.samples[-1][0]) for s in bridges if s.samples]
        if not spans:
            return {}
        wall = max(b for _, b in spans) - min(a for a, _ in spans)
        if wall <= 0:
            return {}

        def cpu(samplers: list[ProcessSampler]) -> float:
            return sum(s.samples[-1][1] - s.samples[0][1] for s in samplers if s.samples)

        return {
            "cpu_percent_mean": 100 * cpu(bridges) / wall,
            "rss_mb_peak": max((x[2] for s in bridges for x in s.samples), default=0) / 2**20,
            "redis_cpu_percent_mean": 100 * cpu(stores) / wall,
            "processes": len(bridges),
        }


# ---------------------------------------------------------------- orchestration


async def bridge_state(
    http: aiohttp.ClientSession, bases: list[str], settle: float
) -> tuple[dict[tuple[str, str, str], float], int, list[tuple[str, dict[str, str], float]]]:
    """Poll until no call is live on any of `bases` (or `settle` seconds pass): the gauges and
    /readyz calls summed over them, their metrics."""
    deadline = time.monotonic() + settle
    while True:
        samples: list[tuple[str, dict[str, str], float]] = []
        ready = 0
        for base in bases:
            async with http.get(f"{base}/metrics") as resp:
                samples.extend(metric_samples(await resp.text()))
            async with http.get(f"{base}/readyz") as resp:
                ready += int((await resp.json())["calls"])
        active: dict[tuple[str, str, str], float] = {}
        for name, labels, value in samples:
            if name == "acvg_calls_active":
                key = (labels["route"], labels["path"], labels["role"])
                active[key] = active.get(key, 0.0) + value
        if (not any(active.values()) and ready == 0) or time.monotonic() > deadline:
            return active, ready, samples
        await asyncio.sleep(0.5)


def summarize_metrics(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, Any]:
    def by(name: str, *keys: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric, labels, value in samples:
            if metric == name and value:
                key = "/".join(labels.get(k, "") for k in keys)
                out[key] = out.get(key, 0.0) + value
        return dict(sorted(out.items()))

    return {
        "calls_started": by("acvg_calls_started_total", "path", "role"),
        "calls_ended": by("acvg_calls_ended_total", "path", "role", "reason"),
        "routing": by("acvg_routing_decisions_total", "path", "reason"),
        "upstream_errors": by("acvg_upstream_errors_total", "path", "kind"),
        "rejected": by("acvg_rejected_requests_total", "route", "reason"),
        "shadow_comparisons": by("acvg_shadow_comparisons_total", "result"),
        "takeovers": by("acvg_takeovers_total", "path", "reason"),
        "forwarded": by("acvg_forwarded_requests_total", "route"),
        "store_errors": by("acvg_store_errors_total", "op"),
    }


def start_sims(control: int, vg: int, shadow_vg: int, legacy: int) -> subprocess.Popen[bytes]:
    """The simulators' process (serve_sims)."""
    ports = (str(p) for p in (control, vg, shadow_vg, legacy))
    return subprocess.Popen([sys.executable, "-m", "bench.soak", "--serve-sims", *ports], cwd=ROOT)


def stop_processes(*processes: subprocess.Popen[bytes]) -> None:
    """SIGTERM to all, then wait for each (SIGKILL after 15 s)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def run_soak(options: SoakOptions, *, settle: float = 30.0) -> SoakResult:
    """Start the simulators and the bridge, run the load with faults, return the verdict."""
    if options.instances > 1:
        return await run_fleet_soak(options, settle=settle)
    from bridge.config import parse_config

    control, vg, shadow_vg, legacy, bridge_port = (free_port() for _ in range(5))
    ledger = Ledger()
    cfg_doc = config(vg, shadow_vg, legacy)
    routes = parse_config(yaml.safe_dump(cfg_doc)).routes
    with tempfile.TemporaryDirectory() as tmp:
        cfg_file, log_file = Path(tmp) / "soak.yaml", Path(tmp) / "bridge.log"
        cfg_file.write_text(yaml.safe_dump(cfg_doc))
        sims = start_sims(control, vg, shadow_vg, legacy)
        with log_file.open("w") as log:
            bridge = subprocess.Popen(
                [
                    *(sys.executable, "-m", "bridge", "--log-level", "WARNING", "serve"),
                    *("--config", str(cfg_file), "--listen", f"127.0.0.1:{bridge_port}"),
                ],
                stderr=log,
                cwd=ROOT,
            )
        base, control_url = f"http://127.0.0.1:{bridge_port}", f"http://127.0.0.1:{control}"
        sampler = ProcessSampler(bridge.pid)
        connector = aiohttp.TCPConnector(limit=0)
        try:
            async with aiohttp.ClientSession(connector=connector) as http:
                await wait_http(f"{base}/healthz", http=http)
                await wait_http(f"{control_url}/state", http=http)
                sampling = asyncio.create_task(sampler.run())
                load = Load(options, base, control_url, routes, ledger)
                try:
                    await load.run(http)
                finally:
                    sampling.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sampling
                active, ready, samples = await bridge_state(http, [base], settle)
                async with http.get(f"{control_url}/state") as resp:
                    sims_state: dict[str, Any] = await resp.json()
        finally:
            stop_processes(bridge, sims)
        ledger.bridge_final(BridgeState(active, ready, error_lines(log_file)))
    verdict = ledger.verdict()
    return SoakResult(
        verdict,
        {**sampler.figures(), **summarize_metrics(samples)},
        sims_state,
        latency_table(ledger),
    )


async def run_fleet_soak(options: SoakOptions, *, settle: float = 30.0) -> SoakResult:
    """The soak against a fleet (`options.instances` of them, module docstring)."""
    from bridge.config import parse_config
    from bridge.sim.fleet import make_fleet
    from bridge.sim.nginx_server import running_nginx
    from bridge.sim.redis_server import running_redis

    control, vg, shadow_vg, legacy = (free_port() for _ in range(4))
    ledger = Ledger(hangups_cut=options.schedule is not None)
    cfg_doc = config(vg, shadow_vg, legacy)
    routes = parse_config(yaml.safe_dump(cfg_doc)).routes
    names = tuple(chr(ord("a") + k) for k in range(options.instances))
    control_url = f"http://127.0.0.1:{control}"
    with contextlib.ExitStack() as stack:
        if options.workdir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="acvg-soak-")))
        else:
            work = options.workdir
            work.mkdir(parents=True, exist_ok=True)
        stack.callback(stop_processes, start_sims(control, vg, shadow_vg, legacy))
        redis = stack.enter_context(running_redis(work / "redis"))
        fleet = await asyncio.to_thread(
            make_fleet,
            work / "fleet",
            redis.url,
            cfg_doc["routes"],
            names,
            lease_s=options.lease_s,
            admin_token=FLEET_ADMIN_TOKEN,
        )
        stack.callback(fleet.stop)
        upstreams = [f"127.0.0.1:{i.port}" for i in fleet.instances]
        nginx = stack.enter_context(running_nginx(work / "nginx", upstreams))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            await wait_http(f"{control_url}/state", http=http)
            await wait_http(f"{nginx.url}/nginx-health", http=http)
            load = Load(options, nginx.url, control_url, routes, ledger, keep_push=True)
            driver = FleetDriver(fleet, redis, http, nginx.url, load.now)
            watching = asyncio.create_task(driver.watch())
            try:
                await load.run(http, driver)
            finally:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
            active, ready, _ = await bridge_state(http, driver.bases(), settle)
            await driver.scrape_all()
            async with http.get(f"{control_url}/state") as resp:
                sims_state: dict[str, Any] = await resp.json()
            async with http.get(f"{control_url}/upstream") as resp:
                upstream: dict[str, dict[str, int]] = await resp.json()
        await asyncio.to_thread(fleet.stop)
        errors = sum(error_lines(i.log_file) for i in fleet.instances)
        nginx_errors = sum(
            1 for line in nginx.error_log().splitlines() if "[error]" in line or "[crit]" in line
        )
    ledger.bridge_final(BridgeState(active, ready, errors))
    ledger.upstream_final(
        UpstreamState(
            {name: figures["duplicate_inputs"] for name, figures in upstream.items()},
            sum(figures.get("second_session_new", 0) for figures in upstream.values()),
        )
    )
    samples = driver.samples()
    return SoakResult(
        ledger.verdict(),
        summarize_metrics(samples),
        sims_state,
        latency_table(ledger),
        {
            "instances": options.instances,
            "lease_s": options.lease_s,
            "duration": options.duration,
            "load_s": load.ran,
            "events": driver.events,
            "victim": driver.victim,
            "processes": driver.figures(),
            "upstream": upstream,
            "push_connects": dict(load.push_connects),
            "nginx_error_lines": nginx_errors,
            "workdir": str(options.workdir) if options.workdir is not None else None,
        },
    )


def latency_table(ledger: Ledger) -> dict[str, dict[str, float]]:
    rows = {
        "all": ledger.latencies(),
        "legacy": ledger.latencies(path="legacy", during="normal"),
        "voicegateway": ledger.latencies(path="voicegateway", during="normal"),
        "slow_shadow route, normal": ledger.latencies(route="slow_shadow", during="normal"),
        "slow_shadow route, shadow slow": ledger.latencies(
            route="slow_shadow", during=FaultKind.SLOW_SHADOW
        ),
        # the same legacy primary on a route whose shadow stays fast, same time windows
        "split_sync legacy, normal": ledger.latencies(
            route="split_sync", path="legacy", during="normal"
        ),
        "split_sync legacy, other shadow slow": ledger.latencies(
            route="split_sync", path="legacy", during=FaultKind.SLOW_SHADOW
        ),
    }
    fleet_faults = (FaultKind.INSTANCE_KILLED, FaultKind.ROLLING_RESTART, FaultKind.REDIS_RESTART)
    for kind in sorted({f.kind for f in ledger.faults} & set(fleet_faults), key=fleet_faults.index):
        rows[f"during {kind.value}"] = ledger.latencies(during=kind)
    return {
        name: {
            "turns": len(values),
            "p50_ms": 1000 * percentile(values, 50),
            "p99_ms": 1000 * percentile(values, 99),
        }
        for name, values in rows.items()
    }


def report(result: SoakResult, options: SoakOptions) -> str:
    f = result.verdict.figures
    lines = [
        f"soak: {options.calls} concurrent callers for {options.duration:g} s, shadow on",
        f"calls {f['calls']} (peak concurrent {f['peak_concurrent_calls']}), "
        f"turns {f['turns']} ({f['turns_complete']} complete, "
        f"{f['turns_cut_by_fault']} cut by an upstream fault), outputs {f['outputs']} "
        f"({f['outputs_checked']} numbered outputs checked)",
        f"duplicates {f['duplicates']}, reordered {f['reordered']}, lost {f['lost']}, "
        f"unanswered {f['unanswered']}, 5xx {f['server_errors']}, leaked {f['leaked']}"
        + (f", dropped {f['dropped']}" if f["dropped"] else ""),
        f"ends: {json.dumps(f['ended'])}; bridge hangups {f['bridge_hangups']}",
        f"turns cut by an upstream fault, by cause: {json.dumps(f['turns_cut'])}",
        *(
            [f"requests gone wrong, by the last fault before them: {json.dumps(troubled)}"]
            if (troubled := f.get("troubled_after"))
            else []
        ),
        f"calls by route/mode/path: {json.dumps(f['calls_by_route_mode_path'])}",
        f"faults: {json.dumps(f['faults'])}",
        f"simulators: {json.dumps(result.sims)}",
    ]
    b = result.bridge
    if "cpu_percent_mean" in b:
        lines.append(
            f"bridge: CPU {b['cpu_percent_mean']:.0f}% mean, {b['cpu_percent_peak']:.0f}% peak "
            f"(1 s), RSS peak {b['rss_mb_peak']:.0f} MB"
        )
    for key in ("calls_started", "calls_ended", "routing", "upstream_errors", "rejected"):
        lines.append(f"bridge {key}: {json.dumps(b.get(key, {}))}")
    if result.fleet:
        lines.extend(fleet_report(result))
    lines.append("turn latency (sent → last output):")
    for name, row in result.latency_ms.items():
        lines.append(
            f"  {name:<32} {row['turns']:>7.0f} turns  p50 {row['p50_ms']:8.1f} ms"
            f"  p99 {row['p99_ms']:8.1f} ms"
        )
    verdict = result.verdict
    lines.append("LEDGER HOLDS" if verdict.ok else f"LEDGER FAILS: {len(verdict.problems)}")
    if len(verdict.problems) > 30:
        lines.append("  problems of the same kind (call ids and turn numbers left out):")
        for kind, count in problem_kinds(verdict.problems).most_common(12):
            lines.append(f"  {count:>5} x {kind}")
        lines.append("  the first 30:")
    lines.extend(f"  - {p}" for p in verdict.problems[:30])
    return "\n".join(lines)


def problem_kinds(problems: Sequence[str]) -> Counter[str]:
    """The ledger's problems with their call ids and turn numbers left out, counted."""
    kinds: Counter[str] = Counter()
    for problem in problems:
        kind = re.sub(r"^call \S+ ", "", problem)
        kinds[re.sub(r"\bturn \d+", "turn N", kind)] += 1
    return kinds


def fleet_report(result: SoakResult) -> list[str]:
    """The lines a fleet run adds to the report."""
    fleet, b, f = result.fleet, result.bridge, result.verdict.figures
    takeovers = b.get("takeovers", {})
    processes = fleet["processes"]
    upstream = fleet["upstream"]
    vg_reconnects = sum(u.get("session_reconnect", 0) for u in upstream.values())
    extended = fleet["load_s"] > fleet["duration"] + 0.5
    lines = [
        f"fleet: {fleet['instances']} instances (lease_s {fleet['lease_s']:g}) sharing one "
        "redis-server, behind nginx with deploy/nginx/acvg-bridge.conf; every caller through nginx",
        f"  callers placed calls for {fleet['load_s']:.1f} s"
        + (" (past the deadline: until the faults were over)" if extended else ""),
        *(f"  {event}" for event in fleet["events"]),
        f"takeovers {sum(takeovers.values()):g} by path/reason {json.dumps(takeovers)}; "
        f"forwarded requests {sum(b.get('forwarded', {}).values()):g}; "
        f"store errors {json.dumps(b.get('store_errors', {}))}",
        f"upstreams: duplicate inputs {f.get('duplicates_upstream')} "
        f"({json.dumps({k: u['duplicate_inputs'] for k, u in upstream.items()})}), "
        f"second session:new {f.get('second_session_new')}, "
        f"session:reconnect {vg_reconnects}, legacy POSTs repeating ids "
        f"{upstream.get('legacy', {}).get('repeated_posts')}",
        f"push sockets: {json.dumps(fleet['push_connects'])} connects; "
        f"nginx error log lines {fleet['nginx_error_lines']}",
    ]
    if processes:
        lines.append(
            f"bridges: CPU {processes['cpu_percent_mean']:.0f}% of one core mean over "
            f"{processes['processes']:.0f} instance processes together, RSS peak "
            f"{processes['rss_mb_peak']:.0f} MB (one instance); redis-server CPU "
            f"{processes['redis_cpu_percent_mean']:.0f}%"
        )
    if fleet.get("workdir"):
        lines.append(f"configs and logs: {fleet['workdir']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--calls", type=int, default=500, help="concurrent callers")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="bridge instances; above 1 a fleet on Redis behind nginx, with the fleet's faults",
    )
    parser.add_argument("--workdir", type=Path, help="a fleet run keeps its configs and logs here")
    parser.add_argument(
        "--fleet-faults",
        default=",".join(FLEET_FAULTS),
        help="which fleet faults, comma-separated (they come in the order kill, rolling, redis)",
    )
    parser.add_argument(
        "--json", type=Path, help="also write the result here: figures, every problem, metrics"
    )
    parser.add_argument(
        "--no-lb-wait",
        action="store_true",
        help="rolling restart: the next SIGTERM once /healthz answers, not once nginx uses it",
    )
    args = parser.parse_args(argv)
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    fleet_faults = [name for name in args.fleet_faults.split(",") if name]
    if not set(fleet_faults) <= set(FLEET_FAULTS):
        parser.error(f"--fleet-faults: names among {', '.join(FLEET_FAULTS)}")
    scale = args.duration / 60.0
    schedule = Schedule(
        (8.0 * scale, 18.0 * scale), (24.0 * scale, 27.0 * scale), (38.0 * scale, 44.0 * scale)
    )
    fleet = args.instances > 1  # the fleet's faults in place of the upstream ones
    options = SoakOptions(
        calls=args.calls,
        duration=args.duration,
        seed=args.seed,
        schedule=None if args.no_faults or fleet else schedule,
        instances=args.instances,
        fleet_schedule=None
        if args.no_faults
        else FleetSchedule.scaled(args.duration, lb_wait=not args.no_lb_wait, faults=fleet_faults),
        workdir=args.workdir,
    )
    result = asyncio.run(run_soak(options))
    print(report(result, options))
    if args.json is not None:
        text = json.dumps(_no_nan(result_json(result)), indent=1, default=str, allow_nan=False)
        args.json.write_text(text + "\n")
    return 0 if result.verdict.ok else 1


def _no_nan(value: Any) -> Any:
    """`value` with every NaN (a percentile of no values) as null: strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def result_json(result: SoakResult) -> dict[str, Any]:
    """The result as JSON: the ledger's figures and all its problems (grouped by kind too),
    the bridge's metrics, the simulators' state, the latency table and a fleet run's own."""
    return {
        "ok": result.verdict.ok,
        "figures": result.verdict.figures,
        "problem_kinds": dict(problem_kinds(result.verdict.problems).most_common()),
        "problems": result.verdict.problems,
        "bridge": result.bridge,
        "sims": result.sims,
        "latency_ms": result.latency_ms,
        "fleet": result.fleet,
    }


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--serve-sims":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(serve_sims(*(int(a) for a in sys.argv[2:])))
        raise SystemExit(0)
    sys.exit(main())
