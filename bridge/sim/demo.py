"""`acvg-bridge demo`: the bridge between a simulated VAIC and both simulated Cognigy endpoints.

Everything runs in one process on 127.0.0.1: the bridge on an ephemeral port, the simulated
Voice Gateway endpoint, the simulated legacy AudioCodes endpoint (sync, async, and a deliberately
divergent variant of the flows), and the VAIC simulator. Routes `support` and `support_async` are
split routes (half the callers on each path, sticky per caller) with shadow on; every shipped
scenario plays over each of VAIC's ways in (`DEMO_RUNS`). Route `support_divergent` serves from
voicegateway and shadows onto the divergent legacy flows, whose mismatches are expected. Mid-run
the config file is rewritten and reloaded (percentage 50 → 100) while one call is in flight.
Prints transcripts (with each call's path), the per-node shadow comparison table, the divergent
mismatches with their field paths, the routing split, latencies per path and a summary; the exit
status is 0 iff every check held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import yaml
from aiohttp import web
from prometheus_client.metrics import MetricWrapperBase

from bridge.app import Gateway, GatewayKey, create_app
from bridge.config import load_config
from bridge.console.history import histogram_quantile
from bridge.errors import ConfigError, MappingError
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.scenario import (
    Scenario,
    ScenarioResult,
    StepKind,
    Transport,
    bot_url_for,
    check_step,
    describe_activity,
    describe_step,
    load_scenarios,
    run_scenario,
    step_activity,
)
from bridge.sim.vaic import VaicClient
from bridge.sim.vg_endpoint import VGEndpointSim
from bridge.transport.admin import reload_gateway
from bridge.transport.http_errors import JsonErrorRunner

DEMO_TOKEN = "demo-token"
# The console's admin token in the demo (printed with the console URL: a fixed demo value).
DEMO_ADMIN_TOKEN = "demo-admin"
# `serve`: after the scripted calls, one more call this often while the console is open.
SERVE_CALL_EVERY_S = 1.0
LEGACY_TOKEN = "legacy-demo-token"
# Loopback answers come within milliseconds; this is the quiet time that ends an async step.
SETTLE_SECONDS = 0.05
SPLIT_PERCENT = 50.0
RELOADED_PERCENT = 100.0
SPLIT_ROUTES = ("support", "support_async")
RELOAD_ROUTE = "support"
DIVERGENT_ROUTE = "support_divergent"
# One scenario per flow that DIVERGENT_OVERRIDES changes, and the only (node, field path) its
# shadow comparison may show as a mismatch.
DIVERGENT_EXPECTED: dict[str, tuple[str, str]] = {
    "greeting": ("say", "text"),
    "play_url": ("play", "activityParams.playUrlUrl"),
    "transfer_dial": ("transfer_dial", "activityParams.transferTarget"),
}
# Scenario i calls from CALLER_PREFIX + i; with the sticky hash this puts about half the callers
# on each path of each split route.
CALLER_PREFIX = "+49151123456"
SHADOW_WAIT_SECONDS = 5.0
SHADOW_POLL_SECONDS = 0.05
COMPARISON_RESULTS = ("match", "mismatch", "missing", "extra")


@dataclass(frozen=True)
class DemoRun:
    """One way VAIC plays the scenarios: which route, over which transport."""

    route: str
    transport: Transport
    async_mode: bool


DEMO_RUNS = (
    DemoRun("support", "http", async_mode=False),
    DemoRun("support_async", "http", async_mode=True),
    DemoRun("support", "ws", async_mode=False),
    DemoRun("support_async", "ws", async_mode=True),
)


@dataclass(frozen=True)
class LegacyUrls:
    """Bot URLs of the simulated legacy endpoints: sync, Async Mode, and the divergent flows."""

    sync: str
    async_mode: str
    divergent: str


@dataclass(frozen=True)
class DemoCall:
    """One scripted call: its result, the path that served it (as the bridge counted it)."""

    phase: str
    result: ScenarioResult
    seconds: float
    path: str
    reason: str


def demo_config(
    vg_url: str, legacy: LegacyUrls | None = None, *, percent: float = SPLIT_PERCENT
) -> str:
    """The demo's configuration. Without `legacy`: routes `support` (sync) and `support_async`
    (async mode) served by the VG endpoint alone. With it: both are split routes (`percent` of
    the callers on voicegateway, sticky per caller, shadow on), and `support_divergent` serves
    from voicegateway with the divergent legacy flows as its shadow."""
    route: dict[str, Any] = {
        "token": DEMO_TOKEN,
        "default_region": "DE",
        # The simulated VG endpoint sends later outputs 20 ms after its ack: 300 ms leaves room
        # for a loaded machine (a garbage-collector pause in a long test process) before a turn
        # is cut early, which would show as a failed scenario and a shadow mismatch.
        "turn_settle_ms": 300,
        "sip_headers": {"callIdentification": "X-Conversation-ID"},
        "voicegateway": {"url": vg_url},
    }
    if legacy is None:
        routes = {"support": route, "support_async": {**route, "async_mode": True}}
    else:

        def split(url: str, share: float) -> dict[str, Any]:
            return {
                **route,
                "legacy": {"url": url, "token": LEGACY_TOKEN},
                "migration": {
                    "voicegateway_percent": share,
                    "sticky_key": "caller",
                    "shadow": True,
                },
            }

        routes = {
            "support": split(legacy.sync, percent),
            "support_async": {**split(legacy.async_mode, percent), "async_mode": True},
            DIVERGENT_ROUTE: split(legacy.divergent, 100.0),
        }
    return yaml.safe_dump(
        {"listen": "127.0.0.1:0", "admin_token": DEMO_ADMIN_TOKEN, "routes": routes},
        sort_keys=False,
    )


def demo_callers(scenarios: Sequence[Scenario]) -> list[Scenario]:
    """Each scenario with its own caller number, so the split spreads callers over both paths."""
    return [replace(s, caller=f"{CALLER_PREFIX}{i:02d}") for i, s in enumerate(scenarios)]


# ---------------------------------------------------------------- reading the metrics


def _counts(metric: MetricWrapperBase, *labels: str) -> dict[tuple[str, ...], float]:
    """A counter's `_total` samples summed by the given labels."""
    counts: dict[tuple[str, ...], float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = tuple(sample.labels[label] for label in labels)
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def _gauge_sum(metric: MetricWrapperBase, **match: str) -> float:
    return sum(
        sample.value
        for family in metric.collect()
        for sample in family.samples
        if all(sample.labels.get(k) == v for k, v in match.items())
    )


def _latencies(gateway: Gateway) -> dict[tuple[str, str], tuple[float, list[tuple[float, float]]]]:
    """acvg_turn_duration_seconds by (path, role), summed over routes: count, cumulative buckets."""
    counts: dict[tuple[str, str], float] = {}
    buckets: dict[tuple[str, str], dict[float, float]] = {}
    for family in gateway.metrics.turn_duration.collect():
        for sample in family.samples:
            key = (sample.labels["path"], sample.labels["role"])
            if sample.name.endswith("_count"):
                counts[key] = counts.get(key, 0.0) + sample.value
            elif sample.name.endswith("_bucket"):
                per = buckets.setdefault(key, {})
                le = float(sample.labels["le"])
                per[le] = per.get(le, 0.0) + sample.value
    return {key: (counts[key], sorted(buckets.get(key, {}).items())) for key in counts}


# ---------------------------------------------------------------- playing calls


def _decided(
    before: Mapping[tuple[str, ...], float], after: Mapping[tuple[str, ...], float], route: str
) -> tuple[str, str]:
    """The (path, reason) the bridge counted for the one call started on `route` meanwhile."""
    new = [key for key, value in after.items() if key[0] == route and value > before.get(key, 0.0)]
    if len(new) != 1:
        return "unknown", "unknown"
    return new[0][1], new[0][2]


def _render(call: DemoCall) -> str:
    header, *lines = call.result.render().split("\n")
    return "\n".join([f"{header} path={call.path}", *lines])


@dataclass
class _Demo:
    gateway: Gateway
    base_url: str
    http: aiohttp.ClientSession
    out: TextIO
    calls: list[DemoCall] = field(default_factory=list)

    def say(self, *lines: str) -> None:
        for line in lines:
            print(line, file=self.out)

    def _decisions(self) -> dict[tuple[str, ...], float]:
        return _counts(self.gateway.metrics.routing_decisions, "route", "path", "reason")

    def _record(
        self,
        phase: str,
        result: ScenarioResult,
        started: float,
        before: Mapping[tuple[str, ...], float],
    ) -> DemoCall:
        path, reason = _decided(before, self._decisions(), result.route or "")
        call = DemoCall(phase, result, time.perf_counter() - started, path, reason)
        self.calls.append(call)
        self.say(_render(call))
        return call

    async def play(
        self,
        phase: str,
        scenario: Scenario,
        route: str,
        transport: Transport = "http",
        async_mode: bool = False,
    ) -> DemoCall:
        before, started = self._decisions(), time.perf_counter()
        result = await run_scenario(
            scenario,
            self.base_url,
            DEMO_TOKEN,
            session=self.http,
            transport=transport,
            async_mode=async_mode,
            route=route,
            settle=SETTLE_SECONDS,
        )
        return self._record(phase, result, started, before)

    def live_path(self, route: str, conversation_id: str | None) -> str | None:
        session = self.gateway.calls.get(route, conversation_id or "")
        return None if session is None else session.path

    async def play_across_reload(
        self, scenario: Scenario, route: str, reload: Callable[[], str]
    ) -> tuple[DemoCall, list[str | None]]:
        """Play `scenario` over HTTP (sync) with `reload` run after its first step; returns the
        call and the path the live call had just before the reload and before its hang-up."""
        before, started = self._decisions(), time.perf_counter()
        client = VaicClient(bot_url_for(self.base_url, route), DEMO_TOKEN, session=self.http)
        result = ScenarioResult(
            scenario.name, False, [], route=route, transport="http", mode="sync"
        )
        paths: list[str | None] = []
        open_call, no_input = False, 0
        try:
            created = await client.create()
            result.conversation_id = client.conversation_id
            if created.status != 200:
                raise _Failed(f"create answered {created.status}")
            open_call = True
            for index, step in enumerate(scenario.steps):
                if index == 1:
                    paths.append(self.live_path(route, client.conversation_id))
                    result.transcript.append(f"-- {reload()}")
                result.transcript.append(describe_step(step, scenario))
                if step.kind is StepKind.HANGUP:
                    paths.append(self.live_path(route, client.conversation_id))
                    arg = step.arg or {}
                    open_call = False
                    reply = await client.disconnect(
                        str(arg.get("reasonCode", "client-disconnected")),
                        str(arg.get("reason", "Client Side")),
                    )
                else:
                    no_input += step.kind is StepKind.SILENCE
                    activity = step_activity(step, scenario, client.conversation_id or "", no_input)
                    reply = await client.send([activity])
                if reply.status != 200:
                    raise _Failed(f"step {index + 1}: bot answered {reply.status}")
                result.transcript.extend(f"BOT ← {describe_activity(a)}" for a in reply.activities)
                reason = check_step(step, reply.activities)
                if reason is not None:
                    raise _Failed(f"step {index + 1} ({describe_step(step, scenario)}): {reason}")
            result.passed = True
        except _Failed as failed:
            result.failure = str(failed)
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.failure = f"transport error: {type(exc).__name__}: {exc}"
        finally:
            if open_call:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    await client.disconnect()
            await client.close()
        return self._record("reload", result, started, before), paths

    async def wait_for_shadows(self) -> bool:
        """Poll until no shadow is active and the comparison counts stopped changing."""
        metrics = self.gateway.metrics
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHADOW_WAIT_SECONDS
        last: tuple[float, float] | None = None
        quiet = 0
        while loop.time() < deadline:
            total = sum(_counts(metrics.shadow_comparisons, "result").values())
            active = _gauge_sum(metrics.calls_active, role="shadow")
            quiet = quiet + 1 if (total, active) == last and active == 0 else 0
            if quiet >= 3:
                return True
            last = (total, active)
            await asyncio.sleep(SHADOW_POLL_SECONDS)
        return False


class _Failed(Exception):
    """A step of the hand-played call failed; the message says why."""


# ---------------------------------------------------------------- reports


@dataclass(frozen=True)
class Divergence:
    """One non-matching item of a shadow comparison, from the divergence log."""

    route: str
    scenario: str
    turn: int
    node: str
    result: str
    fields: tuple[str, ...]
    primary: Any = None
    shadow: Any = None


def divergences(gateway: Gateway, scenarios: Mapping[str, str]) -> list[Divergence]:
    """Every non-matching item in the gateway's divergence log, oldest first; `scenarios` maps
    conversation ids to scenario names. A reordered turn shows as an item `(order)`."""
    found: list[Divergence] = []
    for entry in reversed(gateway.divergence.recent(limit=1_000_000)):
        route, turn = str(entry["route"]), int(entry["turn"])
        name = scenarios.get(str(entry["conversation_id"]), "?")
        if not entry["order_matches"]:
            found.append(Divergence(route, name, turn, "(order)", "reordered", ()))
        for item in entry["items"]:
            if item["result"] != "match":
                found.append(
                    Divergence(
                        route,
                        name,
                        turn,
                        str(item["node"]),
                        str(item["result"]),
                        tuple(str(f) for f in item["fields"]),
                        item["primary"],
                        item["shadow"],
                    )
                )
    return found


def _field_value(activity: Any, path: str) -> str:
    value = activity
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return "-"
        value = value[part]
    return json.dumps(value, ensure_ascii=False)


def _describe_divergence(d: Divergence) -> str:
    line = f"  {d.route:<18} {d.scenario:<15} turn {d.turn:<3} {d.node:<14} {d.result:<9}"
    if not d.fields:
        return line.rstrip()
    diffs = "; ".join(
        f"{f}: {_field_value(d.primary, f)} vs {_field_value(d.shadow, f)}" for f in d.fields
    )
    return f"{line} {diffs}"


def _comparison_table(gateway: Gateway) -> list[str]:
    counts = _counts(gateway.metrics.shadow_comparisons, "route", "node", "result")
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for (route, node, result), value in counts.items():
        rows.setdefault((route, node), {})[result] = value
    lines = [f"  {'route':<18} {'node':<18}" + "".join(f"{r:>9}" for r in COMPARISON_RESULTS)]
    for (route, node), per in sorted(rows.items()):
        cells = "".join(f"{per.get(r, 0):>9.0f}" for r in COMPARISON_RESULTS)
        lines.append(f"  {route:<18} {node:<18}{cells}")
    return lines


def _node_table(app: web.Application) -> list[str]:
    counts = _counts(app[GatewayKey].metrics.translations, "direction", "node", "result")
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for (direction, node, result), value in counts.items():
        rows.setdefault((direction, node), {})[result] = value
    lines = [f"  {'direction':<16} {'node':<18} {'ok':>5} {'unmapped':>9} {'error':>6}"]
    for (direction, node), per in sorted(rows.items()):
        lines.append(
            f"  {direction:<16} {node:<18} {per.get('ok', 0):>5.0f} "
            f"{per.get('unmapped', 0):>9.0f} {per.get('error', 0):>6.0f}"
        )
    return lines


def _split_table(gateway: Gateway) -> list[str]:
    counts = _counts(gateway.metrics.routing_decisions, "route", "path", "reason")
    lines = [f"  {'route':<18} {'path':<13} {'reason':<9} {'calls':>6}"]
    for (route, path, reason), value in sorted(counts.items()):
        lines.append(f"  {route:<18} {path:<13} {reason:<9} {value:>6.0f}")
    return lines


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _latency_table(gateway: Gateway, calls: Sequence[DemoCall]) -> list[str]:
    lines = [
        f"  {'path':<13} {'role':<8} {'turns':>6} {'turn p50':>9} {'turn p95':>9} "
        f"{'call p50':>9} {'call p95':>9}"
    ]
    for (path, role), (count, buckets) in sorted(_latencies(gateway).items()):
        measured = [c.seconds for c in calls if c.path == path] if role == "primary" else []
        lines.append(
            f"  {path:<13} {role:<8} {count:>6.0f} "
            f"{_seconds(histogram_quantile(buckets, 0.5)):>9} "
            f"{_seconds(histogram_quantile(buckets, 0.95)):>9} "
            f"{_seconds(_percentile(measured, 50) if measured else None):>9} "
            f"{_seconds(_percentile(measured, 95) if measured else None):>9}"
        )
    return lines


def _by_path(calls: Iterable[DemoCall]) -> str:
    counts: dict[str, int] = {}
    for call in calls:
        counts[call.path] = counts.get(call.path, 0) + 1
    paths = ["legacy", "voicegateway", *sorted(set(counts) - {"legacy", "voicegateway"})]
    return ", ".join(f"{path} {counts.get(path, 0)}" for path in paths)


# ---------------------------------------------------------------- the run


@dataclass
class _Checks:
    results: list[tuple[bool, str]] = field(default_factory=list)

    def add(self, ok: bool, text: str) -> None:
        self.results.append((ok, text))

    @property
    def held(self) -> bool:
        return all(ok for ok, _ in self.results)


async def run_demo(calls: int = 1, out: TextIO = sys.stdout, *, serve: bool = False) -> int:
    """Run the demo (each scenario `calls` times per way); return 0 iff every check held.

    `serve` keeps the bridge and the simulators up after the report, playing a call every
    second so the migration console shows live traffic, until SIGINT or SIGTERM."""
    logging.getLogger("bridge").setLevel(logging.ERROR)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    vg = VGEndpointSim()
    legacy_sync = LegacyEndpointSim(token=LEGACY_TOKEN)
    legacy_async = LegacyEndpointSim(token=LEGACY_TOKEN, async_mode=True)
    legacy_divergent = LegacyEndpointSim(token=LEGACY_TOKEN, divergent=True)
    sims: list[VGEndpointSim | LegacyEndpointSim] = [
        vg,
        legacy_sync,
        legacy_async,
        legacy_divergent,
    ]
    runner: web.AppRunner | None = None
    checks = _Checks()
    with tempfile.TemporaryDirectory(prefix="acvg-demo-") as folder:
        try:
            for sim in sims:
                await sim.start()
            urls = LegacyUrls(legacy_sync.url(), legacy_async.url(), legacy_divergent.url())
            config_path = Path(folder) / "demo.yaml"
            config_path.write_text(demo_config(vg.url(), urls), encoding="utf-8")
            app = create_app(load_config(config_path, env={}), config_path=config_path)
            runner = JsonErrorRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            async with aiohttp.ClientSession() as http:
                demo = _Demo(app[GatewayKey], base_url, http, out)

                def reload() -> str:
                    config_path.write_text(
                        demo_config(vg.url(), urls, percent=RELOADED_PERCENT), encoding="utf-8"
                    )
                    try:
                        reload_gateway(demo.gateway)
                    except (ConfigError, MappingError) as exc:
                        return f"config reload FAILED: {exc}"
                    return (
                        f"config reloaded: voicegateway_percent {SPLIT_PERCENT:g} -> "
                        f"{RELOADED_PERCENT:g} on {', '.join(SPLIT_ROUTES)}"
                    )

                demo.say(
                    f"acvg-bridge demo: bridge on {base_url}/ac/{{{','.join(SPLIT_ROUTES)},"
                    f"{DIVERGENT_ROUTE}}}, VG endpoint on {vg.url()}, legacy endpoints on "
                    f"{urls.sync} (sync), {urls.async_mode} (async), {urls.divergent} (divergent)"
                )
                demo.say(f"Migration console: {base_url}/console (admin token: {DEMO_ADMIN_TOKEN})")
                checks = await _play_all(demo, calls, reload, legacy_sync)
                await _report(demo, app, checks, calls)
                if serve:
                    demo.say(
                        f"Migration console: {base_url}/console (admin token: {DEMO_ADMIN_TOKEN})"
                    )
                    await _serve(demo)
        finally:
            if runner is not None:
                await runner.cleanup()
            for sim in sims:
                await sim.stop()
    return 0 if checks.held else 1


async def _serve(demo: _Demo) -> None:
    """Keep playing calls (quietly) on every route until SIGINT or SIGTERM."""
    demo.say("Serving: a call every second on every route; Ctrl-C stops the demo.")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = [s for s in (signal.SIGINT, signal.SIGTERM) if hasattr(signal, s.name)]
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    scenarios = demo_callers(load_scenarios())
    ways = [*DEMO_RUNS, DemoRun(DIVERGENT_ROUTE, "http", async_mode=False)]
    try:
        index = 0
        while not stop.is_set():
            scenario = scenarios[index % len(scenarios)]
            run = ways[(index // len(scenarios)) % len(ways)]
            index += 1
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await run_scenario(
                    scenario,
                    demo.base_url,
                    DEMO_TOKEN,
                    session=demo.http,
                    transport=run.transport,
                    async_mode=run.async_mode,
                    route=run.route,
                    settle=SETTLE_SECONDS,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SERVE_CALL_EVERY_S)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _play_all(
    demo: _Demo, calls: int, reload: Callable[[], str], legacy_sync: LegacyEndpointSim
) -> _Checks:
    checks = _Checks()
    repeat = max(1, calls)
    scenarios = demo_callers(load_scenarios())
    demo.say(
        "",
        f"Split routes {', '.join(SPLIT_ROUTES)}: voicegateway_percent {SPLIT_PERCENT:g}, "
        "sticky per caller, shadow on",
    )
    for run in DEMO_RUNS:
        for scenario in scenarios:
            for _ in range(repeat):
                await demo.play("split", scenario, run.route, run.transport, run.async_mode)
    split = [c for c in demo.calls if c.phase == "split"]
    held: dict[str, bool] = {}
    for call in split:
        held[call.result.name] = held.get(call.result.name, True) and call.result.passed
    passed = sum(c.result.passed for c in split)
    ways = len({(c.result.route, c.result.transport, c.result.mode) for c in split})
    checks.add(
        passed == len(split),
        f"{sum(held.values())}/{len(held)} scenarios held on all {ways} transports/modes "
        f"({passed}/{len(split)} calls)",
    )
    for route in SPLIT_ROUTES:
        on_route = [c for c in split if c.result.route == route]
        paths = {c.path for c in on_route}
        checks.add(
            paths == {"legacy", "voicegateway"}, f"route {route} split: {_by_path(on_route)}"
        )
    per_caller: dict[tuple[str | None, str], set[str]] = {}
    for call in split:
        per_caller.setdefault((call.result.route, call.result.name), set()).add(call.path)
    checks.add(
        all(len(paths) == 1 for paths in per_caller.values()),
        "sticky: each caller kept its path on every transport/mode",
    )

    demo.say(
        "",
        f"Divergent flow variant: route {DIVERGENT_ROUTE} is served by voicegateway; its legacy "
        "shadow runs DIVERGENT_OVERRIDES, so these comparisons are expected to diverge",
    )
    by_name = {s.name: s for s in scenarios}
    for name in DIVERGENT_EXPECTED:
        if name not in by_name:
            checks.add(False, f"divergent flow variant: scenario {name} is not shipped")
            continue
        for _ in range(repeat):
            await demo.play("divergent", by_name[name], DIVERGENT_ROUTE)
    divergent = [c for c in demo.calls if c.phase == "divergent"]
    checks.add(
        all(c.result.passed and c.path == "voicegateway" for c in divergent),
        f"route {DIVERGENT_ROUTE}: {sum(c.result.passed for c in divergent)}/{len(divergent)} "
        "calls held on the voicegateway primary",
    )
    await _reload_phase(demo, scenarios, checks, reload, legacy_sync)
    return checks


async def _reload_phase(
    demo: _Demo,
    scenarios: Sequence[Scenario],
    checks: _Checks,
    reload: Callable[[], str],
    legacy_sync: LegacyEndpointSim,
) -> None:
    before = [c for c in demo.calls if c.phase == "split" and c.result.route == RELOAD_ROUTE]
    on_legacy = {c.result.name for c in before if c.path == "legacy"}
    demo.say(
        "",
        f"Config reload: voicegateway_percent {SPLIT_PERCENT:g} -> {RELOADED_PERCENT:g} while a "
        f"call on {RELOAD_ROUTE} is in flight",
        f"  before the reload, {RELOAD_ROUTE} calls by path: {_by_path(before)}",
    )
    candidates = [
        s
        for s in scenarios
        if s.name in on_legacy
        and len(s.steps) >= 3
        and s.steps[1].kind is not StepKind.HANGUP
        and s.steps[-1].kind is StepKind.HANGUP
    ]
    if not candidates:
        checks.add(False, "reload: no legacy caller to hold a call across the reload")
        return
    held, live = await demo.play_across_reload(candidates[0], RELOAD_ROUTE, reload)
    seen = legacy_sync.calls.get(held.result.conversation_id or "")
    demo.say(
        f"  the call was {live[0]} before the reload and {live[-1]} at its hang-up; the legacy "
        f"endpoint got its inputs: {', '.join(seen.received_names()) if seen else 'none'}"
    )
    demo.say(f"  after the reload, each scenario once more on {RELOAD_ROUTE} (http, sync):")
    after = [await demo.play("after reload", s, RELOAD_ROUTE) for s in scenarios]
    was = {c.result.name: c.path for c in before}
    moved = sum(1 for c in after if was.get(c.result.name) == "legacy" and c.path != "legacy")
    back = sum(1 for c in after if was.get(c.result.name) == "voicegateway" and c.path == "legacy")
    kept = held.result.passed and held.path == "legacy" and live == ["legacy", "legacy"]
    line = (
        f"Reload: voicegateway_percent {SPLIT_PERCENT:g} -> {RELOADED_PERCENT:g}; {RELOAD_ROUTE} "
        f"split before {_by_path(before)}, after {_by_path(after)}; the call in flight kept "
        f"path={held.path}; {moved} callers moved legacy -> voicegateway, {back} moved back"
    )
    demo.say(line)
    checks.add(
        kept
        and seen is not None
        and all(c.result.passed and c.path == "voicegateway" for c in after)
        and back == 0,
        f"reload: the call in flight kept path={held.path}; new calls after it: "
        f"{_by_path(after)}; {back} callers moved back to legacy",
    )


async def _report(demo: _Demo, app: web.Application, checks: _Checks, calls: int) -> None:
    gateway = demo.gateway
    settled = await demo.wait_for_shadows()
    checks.add(settled, f"shadows finished within {SHADOW_WAIT_SECONDS:g}s")
    names = {
        c.result.conversation_id: c.result.name for c in demo.calls if c.result.conversation_id
    }
    found = divergences(gateway, names)
    unexpected = [d for d in found if d.route != DIVERGENT_ROUTE]
    divergent = [d for d in found if d.route == DIVERGENT_ROUTE]
    comparisons = _counts(gateway.metrics.shadow_comparisons, "route", "result")
    plain = {k: v for k, v in comparisons.items() if k[0] != DIVERGENT_ROUTE}
    plain_total = sum(plain.values())
    plain_bad = sum(v for (_, result), v in plain.items() if result != "match")
    checks.add(
        plain_total > 0 and plain_bad == 0 and not unexpected,
        f"shadow on {', '.join(SPLIT_ROUTES)}: {plain_total:.0f} comparisons, "
        f"{plain_total - plain_bad:.0f} match",
    )
    repeat = max(1, calls)
    expected = sorted(
        (name, node, "mismatch", (path,))
        for name, (node, path) in DIVERGENT_EXPECTED.items()
        for _ in range(repeat)
    )
    observed = sorted((d.scenario, d.node, d.result, d.fields) for d in divergent)
    counted = sum(
        v
        for (route, result), v in comparisons.items()
        if route == DIVERGENT_ROUTE and result != "match"
    )
    checks.add(
        observed == expected and counted == len(expected),
        f"divergent flow variant: {len(observed)} mismatches, exactly the expected "
        f"{', '.join(path for _, path in DIVERGENT_EXPECTED.values())}"
        if observed == expected and counted == len(expected)
        else f"divergent flow variant: {len(observed)} mismatches ({counted:.0f} counted), "
        f"expected exactly {len(expected)}",
    )

    demo.say("", "Shadow comparisons by node (acvg_shadow_comparisons_total):")
    demo.say(*_comparison_table(gateway))
    demo.say("", f"Divergent mismatches (route {DIVERGENT_ROUTE}, expected; primary vs shadow):")
    demo.say(*(_describe_divergence(d) for d in divergent))
    if unexpected:
        demo.say("", "UNEXPECTED divergences (primary vs shadow):")
        demo.say(*(_describe_divergence(d) for d in unexpected))
    demo.say("", "Routing split (acvg_routing_decisions_total):")
    demo.say(*_split_table(gateway))
    demo.say("", "Latencies by path (turns: acvg_turn_duration_seconds; calls: measured):")
    demo.say(*_latency_table(gateway, demo.calls))
    demo.say("", "Translations by node:")
    demo.say(*_node_table(app))
    from bridge.sim.replay_demo import replay_phase  # it builds on this module's runs

    await replay_phase(demo.say, checks.add)
    _summary(demo, checks)


def _summary(demo: _Demo, checks: _Checks) -> None:
    demo.say(
        "",
        "Summary:",
        f"  {'scenario':<18} {'result':<6} {'route':<18} {'transport/mode':<16} "
        f"{'path (reason)':<24} {'seconds':>8}",
    )
    for call in demo.calls:
        result = call.result
        verdict = "PASS" if result.passed else "FAIL"
        via = f"{result.transport}/{result.mode}"
        demo.say(
            f"  {result.name:<18} {verdict:<6} {result.route or '':<18} {via:<16} "
            f"{f'{call.path} ({call.reason})':<24} {call.seconds:>8.3f}"
        )
    durations = [c.seconds for c in demo.calls]
    turns = sum(
        sample.value
        for family in demo.gateway.metrics.turn_duration.collect()
        for sample in family.samples
        if sample.name.endswith("_count") and sample.labels.get("role") == "primary"
    )
    demo.say(
        "",
        f"{len(demo.calls)} calls, {turns:.0f} turns; call time p50 "
        f"{_percentile(durations, 50):.3f}s, max {max(durations, default=0.0):.3f}s",
    )
    for ok, text in checks.results:
        demo.say(f"{'PASS' if ok else 'FAIL'}  {text}")
    demo.say("demo " + ("held" if checks.held else "FAILED"))
