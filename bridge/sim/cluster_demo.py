"""`acvg-bridge demo --cluster`: the fleet as deployed, on loopback, losing instances mid-run.

Its one job: start one redis-server, three `acvg-bridge serve` instances sharing it
(`cluster.redis_url`) and nginx with the shipped deploy/nginx/acvg-bridge.conf in front of them;
play shadowed calls through nginx from the embedded simulators (VAIC, the Voice Gateway
endpoint, the legacy AudioCodes endpoint); mid-run SIGKILL the instance holding the most calls
(as `GET /admin/cluster` through nginx says) and later restart another one (SIGTERM, then start
it again); print the topology, each phase as it happens and every call's result with totals.

Rules: exit 0 iff every call finished with every turn answered, the kill and the restart both
happened, no Voice Gateway call was started twice (a takeover is a `session:reconnect`) and the
endpoint that served each call saw it end; otherwise 1 with the reason. 2, with one line naming
what to install, when redis-server or nginx is missing; 130 when interrupted. Everything started
here is stopped on the way out, on Ctrl-C, SIGTERM and errors too, and the temporary directory
is removed. The transcript carries no phone numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bridge.sim.demo import DEMO_ADMIN_TOKEN, DEMO_TOKEN, LEGACY_TOKEN
from bridge.sim.fleet import ROOT, Fleet, Instance, make_fleet
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.nginx_server import SHIPPED_CONF, nginx_binary, running_nginx
from bridge.sim.redis_server import free_port, redis_binary, running_redis
from bridge.sim.scenario import (
    Scenario,
    Step,
    StepKind,
    bot_url_for,
    check_step,
    describe_activity,
    load_scenarios,
    step_activity,
)
from bridge.sim.vaic import VaicClient
from bridge.sim.vg_endpoint import VGEndpointSim

DEFAULT_CALLS = 18
INSTANCES = ("a", "b", "c")
# route -> the path that serves its calls; the other path shadows them
ROUTES: dict[str, str] = {"support": "voicegateway", "support_legacy": "legacy"}
SCENARIO = "spoken_answer"  # its second step can be repeated: the flow asks the same again
REPEATS = 9  # turns of the repeated step: with start and the two closing steps, 12 per call
TURN_GAP_S = 1.2  # the caller's thinking time between two turns
START_SPREAD_S = 0.2  # calls start this far apart ...
START_SPREAD_MAX_S = 3.0  # ... over at most this long
KILL_AT = 1 / 3  # share of all turns done when the busiest instance is killed
RESTART_AT = 2 / 3  # ... and when another one is restarted
LEASE_S = 1.5
DRAIN_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 20.0
SHADOW_WAIT_S = 3.0
POLL_S = 0.05
INSTALL_HINT = "tools/ensure_system_peers"

EXIT_HELD, EXIT_FAILED, EXIT_MISSING, EXIT_INTERRUPTED = 0, 1, 2, 130


def missing_peers() -> list[str]:
    """The Debian packages the cluster demo needs and cannot find."""
    missing = []
    for package, find in (("redis-server", redis_binary), ("nginx", nginx_binary)):
        try:
            find()
        except RuntimeError:
            missing.append(package)
    return missing


def cluster_routes(vg_url: str, legacy_url: str) -> dict[str, Any]:
    """Both routes know both upstreams; each is served from one path and shadowed on the other."""
    routes: dict[str, Any] = {}
    for name, primary in ROUTES.items():
        routes[name] = {
            "token": DEMO_TOKEN,
            "default_region": "DE",
            # room for a loaded machine before a turn is answered early (as bridge/sim/demo.py)
            "turn_settle_ms": 300,
            "voicegateway": {"url": vg_url},
            "legacy": {"url": legacy_url, "token": LEGACY_TOKEN},
            "migration": {
                "voicegateway_percent": 100 if primary == "voicegateway" else 0,
                "shadow": True,
            },
        }
    return routes


def _calls(count: int) -> str:
    return f"{count} call" if count == 1 else f"{count} calls"


def _shadow_of(path: str) -> str:
    return "legacy" if path == "voicegateway" else "voicegateway"


def call_script(scenarios: Sequence[Scenario] | None = None) -> tuple[Scenario, list[Step], Step]:
    """The scenario every call plays, its turns in order, and the hang-up that ends it."""
    by_name = {s.name: s for s in (scenarios if scenarios is not None else load_scenarios())}
    scenario = by_name.get(SCENARIO)
    kinds = [s.kind for s in scenario.steps] if scenario is not None else []
    if scenario is None or kinds[1:4] != [StepKind.SAY] * 3 or kinds[-1] is not StepKind.HANGUP:
        raise RuntimeError(f"scenario {SCENARIO}: expected start, three answers and a hang-up")
    start, repeated, *closing, hangup = scenario.steps
    return scenario, [start, *([repeated] * REPEATS), *closing], hangup


# ---------------------------------------------------------------- figures from /metrics


@dataclass
class Figures:
    """What one instance counted: takeovers by reason, shadow comparisons by result, forwarded
    requests, and shadows still running."""

    takeovers: dict[str, float] = field(default_factory=dict)
    comparisons: dict[str, float] = field(default_factory=dict)
    forwarded: float = 0.0
    shadows_active: float = 0.0

    def __add__(self, other: Figures) -> Figures:
        return Figures(
            _merged(self.takeovers, other.takeovers),
            _merged(self.comparisons, other.comparisons),
            self.forwarded + other.forwarded,
            self.shadows_active + other.shadows_active,
        )


def _merged(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    return {key: a.get(key, 0.0) + b.get(key, 0.0) for key in {*a, *b}}


def parse_figures(text: str) -> Figures:
    """The figures the demo reports, from one instance's /metrics text."""
    figures = Figures()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "acvg_takeovers_total":
                reason = sample.labels.get("reason", "?")
                figures.takeovers[reason] = figures.takeovers.get(reason, 0.0) + sample.value
            elif sample.name == "acvg_shadow_comparisons_total":
                result = sample.labels.get("result", "?")
                figures.comparisons[result] = figures.comparisons.get(result, 0.0) + sample.value
            elif sample.name == "acvg_forwarded_requests_total":
                figures.forwarded += sample.value
            elif sample.name == "acvg_calls_active" and sample.labels.get("role") == "shadow":
                figures.shadows_active += sample.value
    return figures


@dataclass
class Ledger:
    """Counters summed over the fleet's lives: an instance that is killed or restarted takes
    its counters with it, so each instance's last scrape before it goes is kept."""

    retired: Figures = field(default_factory=Figures)
    last: dict[str, Figures] = field(default_factory=dict)

    def seen(self, name: str, figures: Figures) -> None:
        self.last[name] = figures

    def retire(self, name: str) -> None:
        self.retired = self.retired + self.last.pop(name, Figures())

    def total(self) -> Figures:
        total = self.retired
        for figures in self.last.values():
            total = total + figures
        return total


# ---------------------------------------------------------------- calls


@dataclass
class CallResult:
    number: int
    route: str
    turns: int
    conversation_id: str = ""
    answered: int = 0
    cut: list[str] = field(default_factory=list)
    finished: bool = False
    failure: str | None = None
    seconds: float = 0.0

    def render(self) -> str:
        primary = ROUTES[self.route]
        where = f"{f'/ac/{self.route}':<19} {primary} (shadow {_shadow_of(primary)})"
        if self.finished:
            verdict = f"finished, {self.answered}/{self.turns} turns answered"
        else:
            verdict = f"NOT finished ({self.failure}), {self.answered}/{self.turns} turns answered"
        line = f"call {self.number:02d} {where:<49} {verdict}, {self.seconds:.1f} s"
        if self.cut:
            line += "; cut: " + "; ".join(self.cut)
        return line


async def _turn(client: VaicClient, step: Step, scenario: Scenario) -> str | None:
    """Play one turn; None when it was answered as the flow says, else why not."""
    activity = step_activity(step, scenario, client.conversation_id or "")
    try:
        reply = await client.send([activity])
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"{type(exc).__name__}"
    if reply.status != 200:
        error = reply.body.get("error") if isinstance(reply.body, dict) else None
        return f"answered {reply.status}" + (f" {error}" if error else "")
    wrong = check_step(step, reply.activities)
    if wrong is not None:
        got = "; ".join(describe_activity(a) for a in reply.activities) or "nothing"
        return f"unexpected answer: {got}"
    return None


# ---------------------------------------------------------------- the run


@dataclass
class _Topology:
    redis: str
    nginx: str
    vg_port: int
    legacy_port: int
    fleet: Fleet


@dataclass
class _Run:
    top: _Topology
    http: aiohttp.ClientSession
    out: TextIO
    total_turns: int
    ledger: Ledger = field(default_factory=Ledger)
    turns_done: int = 0
    started: float = field(default_factory=time.monotonic)

    def say(self, *lines: str) -> None:
        for line in lines:
            print(line, file=self.out, flush=True)

    def event(self, line: str) -> None:
        self.say(f"[{time.monotonic() - self.started:6.1f}s] {line}")

    def live(self) -> list[Instance]:
        return [i for i in self.top.fleet.instances if i.process and i.process.poll() is None]

    async def cluster_status(self, *, show: bool = True) -> dict[str, int]:
        """`GET /admin/cluster` through nginx: calls per live instance (`show`: as an event)."""
        headers = {"Authorization": f"Bearer {DEMO_ADMIN_TOKEN}"}
        async with self.http.get(f"{self.top.nginx}/admin/cluster", headers=headers) as reply:
            body = await reply.json() if reply.status == 200 else None
        if not isinstance(body, dict):
            raise RuntimeError(f"GET /admin/cluster through nginx answered {reply.status}")
        calls = {str(i["id"]): int(i["calls"]) for i in body.get("instances", [])}
        shown = ", ".join(f"{name} {_calls(count)}" for name, count in sorted(calls.items()))
        if show:
            self.event(f"GET /admin/cluster (through nginx): store {body.get('store')}; {shown}")
        return calls

    async def scrape(self, instances: Sequence[Instance]) -> None:
        """Each instance's /metrics, straight from it (through nginx it would be any of them)."""
        for instance in instances:
            try:
                async with self.http.get(f"{instance.url}/metrics") as reply:
                    text = await reply.text()
            except (aiohttp.ClientError, TimeoutError):
                continue  # its last scrape stands
            if reply.status == 200:
                self.ledger.seen(instance.name, parse_figures(text))

    async def wait_turns(self, share: float, calls: asyncio.Future[Any]) -> bool:
        """Until `share` of all turns are done; False when the calls ended first."""
        while self.turns_done < share * self.total_turns:
            if calls.done():
                return False
            await asyncio.sleep(POLL_S)
        return True

    async def play_call(
        self, number: int, route: str, delay: float, script: tuple[Scenario, list[Step], Step]
    ) -> CallResult:
        """One caller through nginx: create, every turn (a turn not answered as the flow says
        is counted as cut and the call goes on), hang up. Printed when it is over."""
        await asyncio.sleep(delay)
        result = CallResult(number, route, len(script[1]))
        url = bot_url_for(self.top.nginx, route)
        client = VaicClient(url, DEMO_TOKEN, session=self.http, timeout=REQUEST_TIMEOUT_S)
        began = time.monotonic()
        try:
            result.failure = await self._converse(client, script, result)
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.failure = type(exc).__name__
        finally:
            await client.close()
        result.finished = result.failure is None
        result.seconds = time.monotonic() - began
        self.turns_done += result.turns - result.answered - len(result.cut)  # never played
        self.event(result.render())
        return result

    async def _converse(
        self, client: VaicClient, script: tuple[Scenario, list[Step], Step], result: CallResult
    ) -> str | None:
        scenario, turns, hangup = script
        created = await client.create()
        result.conversation_id = client.conversation_id or ""
        if created.status != 200 or client.urls is None:
            return f"create answered {created.status}"
        for index, step in enumerate(turns):
            if index:
                await asyncio.sleep(TURN_GAP_S)
            why = await _turn(client, step, scenario)
            self.turns_done += 1
            if why is None:
                result.answered += 1
            else:
                result.cut.append(f"turn {index + 1} {why}")
        arg = hangup.arg or {}
        reply = await client.disconnect(
            str(arg.get("reasonCode", "client-disconnected")), str(arg.get("reason", "Client Side"))
        )
        return None if reply.status == 200 else f"disconnect answered {reply.status}"

    async def kill_busiest(self) -> Instance | None:
        await self.scrape(self.live())
        calls = await self.cluster_status()
        candidates = self.live()
        if not candidates:
            return None
        victim = max(candidates, key=lambda i: calls.get(i.name, 0))
        pid = victim.process.pid if victim.process else 0
        self.ledger.retire(victim.name)
        victim.kill()
        self.event(
            f"kill: SIGKILL instance {victim.name} (pid {pid}), which held the most calls "
            f"({calls.get(victim.name, 0)}); its calls are taken over once its "
            f"{LEASE_S:g} s lease lapses"
        )
        return victim

    async def restart_another(self, killed: Instance | None) -> Instance | None:
        calls = await self.cluster_status()
        candidates = [i for i in self.live() if i is not killed]
        if not candidates:
            return None
        chosen = max(candidates, key=lambda i: calls.get(i.name, 0))
        await self.scrape([chosen])
        pid = chosen.process.pid if chosen.process else 0
        self.event(
            f"restart: SIGTERM instance {chosen.name} (pid {pid}), holding "
            f"{_calls(calls.get(chosen.name, 0))}: it hands them off and exits"
        )
        began = time.monotonic()
        self.ledger.retire(chosen.name)
        await asyncio.to_thread(chosen.stop)
        code = chosen.process.returncode if chosen.process else None
        self.event(
            f"restart: instance {chosen.name} exited (code {code}) after "
            f"{time.monotonic() - began:.1f} s; starting it again"
        )
        began = time.monotonic()
        await asyncio.to_thread(chosen.start)
        pid = chosen.process.pid if chosen.process else 0
        self.event(
            f"restart: instance {chosen.name} is up again (pid {pid}) after "
            f"{time.monotonic() - began:.1f} s"
        )
        return chosen

    async def settle_calls(self) -> None:
        """Show `/admin/cluster` once every instance reports no call (heartbeats lag a little),
        or after SHADOW_WAIT_S."""
        deadline = time.monotonic() + SHADOW_WAIT_S
        while time.monotonic() < deadline:
            if not sum((await self.cluster_status(show=False)).values()):
                break
            await asyncio.sleep(0.2)
        await self.cluster_status()

    async def settle_shadows(self) -> Figures:
        """Scrape the live instances until no shadow runs (or SHADOW_WAIT_S passed)."""
        deadline = time.monotonic() + SHADOW_WAIT_S
        while True:
            await self.scrape(self.live())
            total = self.ledger.total()
            live = sum(self.ledger.last.get(i.name, Figures()).shadows_active for i in self.live())
            if live == 0 or time.monotonic() >= deadline:
                return total
            await asyncio.sleep(0.2)


async def _drive(top: _Topology, calls: int, out: TextIO) -> int:
    logging.getLogger("bridge").setLevel(logging.ERROR)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    script = call_script()
    async with contextlib.AsyncExitStack() as stack:
        vg = await stack.enter_async_context(VGEndpointSim(port=top.vg_port))
        legacy = await stack.enter_async_context(
            LegacyEndpointSim(token=LEGACY_TOKEN, port=top.legacy_port)
        )
        connector = aiohttp.TCPConnector(limit=0)
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        run = _Run(top, http, out, total_turns=calls * len(script[1]))
        run.say(*_topology_lines(top))
        spread = min(START_SPREAD_MAX_S, START_SPREAD_S * calls) / calls
        routes = list(ROUTES)
        run.say(
            "",
            f"{calls} calls of {len(script[1])} turns through nginx, a turn every "
            f"{TURN_GAP_S:g} s; odd calls on /ac/{routes[0]}, even ones on /ac/{routes[1]}",
        )
        run.event("calls starting")
        playing = asyncio.gather(
            *(
                run.play_call(n + 1, routes[n % len(routes)], n * spread, script)
                for n in range(calls)
            )
        )
        killed = restarted = None
        try:
            if await run.wait_turns(KILL_AT, playing):
                killed = await run.kill_busiest()
            if await run.wait_turns(RESTART_AT, playing):
                restarted = await run.restart_another(killed)
            results: list[CallResult] = await playing
        finally:
            if not playing.done():
                playing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await playing
        figures = await run.settle_shadows()
        await run.settle_calls()
        upstream = await _settle_upstreams(results, vg, legacy)
        return _report(run, results, figures, upstream, vg, killed, restarted)


@dataclass(frozen=True)
class Upstreams:
    """How many of the calls' upstream calls the simulated endpoints saw ended (a legacy
    disconnect; a Voice Gateway `call:status` completed), as primary and as shadow."""

    primary_ended: int
    shadow_ended: int
    calls: int


def _vg_ended(vg: VGEndpointSim) -> set[str]:
    """Conversation ids (the start parameter in customerData) of Voice Gateway calls that ended."""
    ended = set()
    for call in vg.calls.values():
        if any(
            m.get("data", {}).get("call_status") == "completed"
            for m in call.messages("call:status")
        ):
            for new in call.messages("session:new"):
                audiocodes = new.get("data", {}).get("customerData", {}).get("audiocodes", {})
                ended.add(str(audiocodes.get("vaigConversationId")))
    return ended


def upstreams(
    results: Sequence[CallResult], vg: VGEndpointSim, legacy: LegacyEndpointSim
) -> Upstreams:
    vg_ended = _vg_ended(vg)
    legacy_ended = {c.conversation_id for c in legacy.calls.values() if not c.active}
    ended = {"voicegateway": vg_ended, "legacy": legacy_ended}
    primary = shadow = 0
    for result in results:
        path = ROUTES[result.route]
        primary += result.conversation_id in ended[path]
        shadow += result.conversation_id in ended[_shadow_of(path)]
    return Upstreams(primary, shadow, len(results))


async def _settle_upstreams(
    results: Sequence[CallResult], vg: VGEndpointSim, legacy: LegacyEndpointSim
) -> Upstreams:
    """Until every primary upstream call ended (the bridge ends them as VAIC hangs up, the
    Voice Gateway side just after its answer), or SHADOW_WAIT_S passed."""
    deadline = time.monotonic() + SHADOW_WAIT_S
    while True:
        seen = upstreams(results, vg, legacy)
        if seen.primary_ended == seen.calls or time.monotonic() >= deadline:
            return seen
        await asyncio.sleep(0.1)


def verdict(results: Sequence[CallResult], *, killed: bool, restarted: bool) -> list[str]:
    """Why the demo did not hold (empty: it held): a call not finished, a turn not answered,
    or a phase that did not happen because the calls were over first."""
    problems = []
    finished = sum(r.finished for r in results)
    turns = sum(r.turns for r in results)
    answered = sum(r.answered for r in results)
    if finished < len(results):
        problems.append(f"{len(results) - finished} of {len(results)} calls did not finish")
    if answered < turns:
        problems.append(f"{turns - answered} of {turns} turns were not answered")
    if not killed:
        problems.append("the calls ended before an instance was killed")
    if not restarted:
        problems.append("the calls ended before an instance was restarted")
    return problems


def _report(
    run: _Run,
    results: Sequence[CallResult],
    figures: Figures,
    upstream: Upstreams,
    vg: VGEndpointSim,
    killed: Instance | None,
    restarted: Instance | None,
) -> int:
    finished = sum(r.finished for r in results)
    turns = sum(r.turns for r in results)
    answered = sum(r.answered for r in results)
    cut = sum(len(r.cut) for r in results)
    takeovers = figures.takeovers
    compared = sum(figures.comparisons.values())
    types = [call.received_types() for call in vg.calls.values()]
    renewed = sum(t.count("session:new") > 1 for t in types)
    reconnects = sum(t.count("session:reconnect") for t in types)
    by_reason = ", ".join(f"{k} {v:.0f}" for k, v in sorted(takeovers.items())) or "none"
    run.say(
        "",
        "Totals:",
        f"  calls finished {finished}/{len(results)}, turns answered {answered}/{turns}, "
        f"turns cut {cut}",
        f"  takeovers (acvg_takeovers_total, summed over the instances): "
        f"{sum(takeovers.values()):.0f} ({by_reason})",
        f"  requests forwarded to a call's owner (acvg_forwarded_requests_total): "
        f"{figures.forwarded:.0f}",
        f"  shadow comparisons (acvg_shadow_comparisons_total): {compared:.0f}, "
        f"{figures.comparisons.get('match', 0.0):.0f} match (a shadow stays on the instance "
        "that started it: turns after a move are not compared)",
        f"  Voice Gateway app: {len(types)} calls (primary and shadow), {reconnects} "
        f"session:reconnect, {renewed} started twice",
        f"  upstream calls ended (legacy disconnect, Voice Gateway call:status completed): "
        f"primary {upstream.primary_ended}/{upstream.calls}, shadow "
        f"{upstream.shadow_ended}/{upstream.calls} (a shadow does not move with its call)",
    )
    problems = verdict(results, killed=killed is not None, restarted=restarted is not None)
    if renewed:
        problems.append(f"{renewed} Voice Gateway calls got a second session:new")
    if upstream.primary_ended < upstream.calls:
        left = upstream.calls - upstream.primary_ended
        problems.append(f"{left} calls were not ended on the path that served them")
    if problems:
        run.say("cluster demo FAILED: " + "; ".join(problems))
        return EXIT_FAILED
    run.say("cluster demo held: every call finished, every turn answered")
    return EXIT_HELD


# ---------------------------------------------------------------- processes


def _stop_fleet(fleet: Fleet) -> None:
    """SIGTERM every instance at once and wait for them (a drain each, side by side)."""
    with ThreadPoolExecutor(max_workers=max(1, len(fleet.instances))) as pool:
        list(pool.map(lambda instance: instance.stop(), fleet.instances))


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the demo like Ctrl-C does, so the cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _topology_lines(top: _Topology) -> list[str]:
    lines = [
        "acvg-bridge demo --cluster: 3 instances sharing one Redis, behind nginx, on 127.0.0.1",
        f"  redis-server          {top.redis} (cluster.redis_url)",
    ]
    for instance in top.fleet.instances:
        pid = instance.process.pid if instance.process else 0
        lines.append(f"  instance {instance.name}            {instance.url} (pid {pid})")
    upstreams = ", ".join(i.name for i in top.fleet.instances)
    lines += [
        f"  nginx                 {top.nginx} ({SHIPPED_CONF.relative_to(ROOT)}) -> {upstreams}",
        f"  Voice Gateway sim     ws://127.0.0.1:{top.vg_port}/",
        f"  legacy endpoint sim   http://127.0.0.1:{top.legacy_port}/",
    ]
    for route, primary in ROUTES.items():
        lines.append(f"  route /ac/{route:<14} primary {primary}, shadow {_shadow_of(primary)}")
    return lines


def run_cluster_demo(
    calls: int | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Run the cluster demo with `calls` calls (default DEFAULT_CALLS); the exit status."""
    missing = missing_peers()
    if missing:
        them = "them" if len(missing) > 1 else "it"
        print(
            f"acvg-bridge demo --cluster needs {' and '.join(missing)}: install {them} with "
            f"{INSTALL_HINT} (or: sudo apt-get install -y {' '.join(missing)})",
            file=err,
        )
        return EXIT_MISSING
    count = DEFAULT_CALLS if calls is None else max(1, calls)
    try:
        with (
            _sigterm_interrupts(),
            tempfile.TemporaryDirectory(prefix="acvg-cluster-demo-") as folder,
            contextlib.ExitStack() as stack,
        ):
            base = Path(folder)
            redis = stack.enter_context(running_redis(base / "redis"))
            vg_port, legacy_port = free_port(), free_port()
            routes = cluster_routes(
                f"ws://127.0.0.1:{vg_port}/", f"http://127.0.0.1:{legacy_port}/"
            )
            fleet = make_fleet(
                base / "fleet",
                redis.url,
                routes,
                INSTANCES,
                lease_s=LEASE_S,
                drain_timeout_s=DRAIN_TIMEOUT_S,
                admin_token=DEMO_ADMIN_TOKEN,
            )
            stack.callback(_stop_fleet, fleet)
            upstreams = [f"127.0.0.1:{i.port}" for i in fleet.instances]
            nginx = stack.enter_context(running_nginx(base / "nginx", upstreams))
            top = _Topology(redis.url, nginx.url, vg_port, legacy_port, fleet)
            return asyncio.run(_drive(top, count, out))
    except KeyboardInterrupt:
        print("cluster demo interrupted: everything it started is stopped", file=err)
        return EXIT_INTERRUPTED
    except (RuntimeError, OSError, aiohttp.ClientError) as exc:
        print(f"cluster demo FAILED: {exc}", file=err)
        return EXIT_FAILED
