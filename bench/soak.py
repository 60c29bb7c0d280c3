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

    python -m bench.soak [--calls 500] [--duration 60] [--seed 1]

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
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    Verdict,
    hangup_reason,
    percentile,
    tag_of,
)
from bench.procs import free_port, wait_http

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


@dataclass
class SoakResult:
    verdict: Verdict
    bridge: dict[str, Any]
    sims: dict[str, Any]
    latency_ms: dict[str, dict[str, float]]


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
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", control).start()
    async with vg_sim, shadow_sim, legacy_sim:
        await asyncio.Event().wait()


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


class Load:
    """VAIC: `options.calls` callers, each placing calls back to back until the deadline."""

    def __init__(
        self,
        options: SoakOptions,
        base: str,
        control: str,
        routes: Mapping[str, Any],
        ledger: Ledger,
    ) -> None:
        self.options = options
        self.base = base
        self.control = control
        self.routes = routes
        self.ledger = ledger
        self.random = random.Random(options.seed)
        self.t0 = 0.0
        self.deadline = 0.0
        self.counter = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

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

    async def run(self, http: aiohttp.ClientSession) -> None:
        self.t0 = time.monotonic()
        self.deadline = self.options.duration
        workers = [asyncio.create_task(self.worker(http, n)) for n in range(self.options.calls)]
        faults = asyncio.create_task(self.faults(http))
        try:
            await asyncio.gather(*workers)
        finally:
            faults.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await faults

    async def worker(self, http: aiohttp.ClientSession, n: int) -> None:
        rng = random.Random(self.options.seed * 100_003 + n)
        await asyncio.sleep(rng.uniform(0, self.options.ramp))
        while self.now() < self.deadline:
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
        self.ledger.call_created(conversation, route, mode, path, reply.status, self.now())
        if reply.status != 200:
            return
        try:
            if mode == "async":
                await client.open_push_socket()
            await self.converse(client, rng, conversation, caller, mode)
        finally:
            await client.close()

    async def converse(
        self, client: Any, rng: random.Random, conversation: str, caller: str, mode: str
    ) -> None:
        turns = rng.randint(*self.options.turns)
        say_bye = rng.random() < 0.5
        hung_up: str | None = None
        for k in range(turns + 1):
            last = k == turns or self.now() >= self.deadline
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
        try:
            reply = await client.disconnect()
            status: int | None = reply.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        self.ledger.call_ended(conversation, how, status, self.now())

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
        self.ledger.turn_answered(conversation, k, reply.status, reply.activities, self.now())
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


def _hangup_in(activities: list[dict[str, Any]]) -> str | None:
    for activity in activities:
        reason = hangup_reason(activity)
        if reason is not None:
            return reason
    return None


# ---------------------------------------------------------------- orchestration


async def bridge_state(
    http: aiohttp.ClientSession, base: str, settle: float
) -> tuple[dict[tuple[str, str, str], float], int, list[tuple[str, dict[str, str], float]]]:
    """Poll until no call is live (or `settle` seconds pass): the gauges, /readyz, the metrics."""
    deadline = time.monotonic() + settle
    while True:
        async with http.get(f"{base}/metrics") as resp:
            samples = metric_samples(await resp.text())
        async with http.get(f"{base}/readyz") as resp:
            ready = int((await resp.json())["calls"])
        active = {
            (labels["route"], labels["path"], labels["role"]): value
            for name, labels, value in samples
            if name == "acvg_calls_active"
        }
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
    }


async def run_soak(options: SoakOptions, *, settle: float = 30.0) -> SoakResult:
    """Start the simulators and the bridge, run the load with faults, return the verdict."""
    from bridge.config import parse_config

    control, vg, shadow_vg, legacy, bridge_port = (free_port() for _ in range(5))
    ledger = Ledger()
    cfg_doc = config(vg, shadow_vg, legacy)
    routes = parse_config(yaml.safe_dump(cfg_doc)).routes
    with tempfile.TemporaryDirectory() as tmp:
        cfg_file, log_file = Path(tmp) / "soak.yaml", Path(tmp) / "bridge.log"
        cfg_file.write_text(yaml.safe_dump(cfg_doc))
        sims_cmd = [sys.executable, "-m", "bench.soak", "--serve-sims"]
        sims = subprocess.Popen(
            [*sims_cmd, *(str(p) for p in (control, vg, shadow_vg, legacy))], cwd=ROOT
        )
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
                active, ready, samples = await bridge_state(http, base, settle)
                async with http.get(f"{control_url}/state") as resp:
                    sims_state: dict[str, Any] = await resp.json()
        finally:
            for process in (bridge, sims):
                process.send_signal(signal.SIGTERM)
            for process in (bridge, sims):
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        ledger.bridge_final(BridgeState(active, ready, error_lines(log_file)))
    verdict = ledger.verdict()
    return SoakResult(
        verdict,
        {**sampler.figures(), **summarize_metrics(samples)},
        sims_state,
        latency_table(ledger),
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
        f"unanswered {f['unanswered']}, 5xx {f['server_errors']}, leaked {f['leaked']}",
        f"ends: {json.dumps(f['ended'])}; bridge hangups {f['bridge_hangups']}",
        f"turns cut by an upstream fault, by cause: {json.dumps(f['turns_cut'])}",
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
    lines.append("turn latency (sent → last output):")
    for name, row in result.latency_ms.items():
        lines.append(
            f"  {name:<32} {row['turns']:>7.0f} turns  p50 {row['p50_ms']:8.1f} ms"
            f"  p99 {row['p99_ms']:8.1f} ms"
        )
    verdict = result.verdict
    lines.append("LEDGER HOLDS" if verdict.ok else f"LEDGER FAILS: {len(verdict.problems)}")
    lines.extend(f"  - {p}" for p in verdict.problems[:30])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--calls", type=int, default=500, help="concurrent callers")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-faults", action="store_true")
    args = parser.parse_args(argv)
    scale = args.duration / 60.0
    schedule = Schedule(
        (8.0 * scale, 18.0 * scale), (24.0 * scale, 27.0 * scale), (38.0 * scale, 44.0 * scale)
    )
    options = SoakOptions(
        calls=args.calls,
        duration=args.duration,
        seed=args.seed,
        schedule=None if args.no_faults else schedule,
    )
    result = asyncio.run(run_soak(options))
    print(report(result, options))
    return 0 if result.verdict.ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--serve-sims":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(serve_sims(*(int(a) for a in sys.argv[2:])))
        raise SystemExit(0)
    sys.exit(main())
