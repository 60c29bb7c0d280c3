"""`acvg-bridge demo`: the bridge between a simulated VAIC and a simulated Cognigy VG endpoint.

Everything runs in one process on 127.0.0.1: the bridge on an ephemeral port, the simulated
Voice Gateway endpoint (Cognigy VG nodes rendered to verbs by the simulator's own code), and
the VAIC simulator playing every shipped scenario over each of VAIC's ways in (`DEMO_RUNS`: HTTP
sync, HTTP async with the push socket, WebSocket sync and async). Prints per-call transcripts, a
per-node translation table and a summary; the exit status is 0 iff every run held.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from dataclasses import dataclass
from typing import TextIO

import aiohttp
import yaml
from aiohttp import web

from bridge.app import GatewayKey, create_app
from bridge.config import parse_config
from bridge.sim.scenario import ScenarioResult, Transport, load_scenarios, run_scenario
from bridge.sim.vg_endpoint import VGEndpointSim

DEMO_TOKEN = "demo-token"
# Loopback answers come within milliseconds; this is the quiet time that ends an async step.
SETTLE_SECONDS = 0.05


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


def demo_config(vg_url: str) -> str:
    """The demo's configuration: routes `support` (sync) and `support_async` (async mode), both
    served by the simulated VG endpoint."""
    route = {
        "token": DEMO_TOKEN,
        "default_region": "DE",
        "turn_settle_ms": 150,
        "sip_headers": {"callIdentification": "X-Conversation-ID"},
        "voicegateway": {"url": vg_url},
    }
    return yaml.safe_dump(
        {
            "listen": "127.0.0.1:0",
            "routes": {"support": route, "support_async": {**route, "async_mode": True}},
        },
        sort_keys=False,
    )


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _node_table(app: web.Application) -> list[str]:
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for metric in app[GatewayKey].metrics.translations.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            key = (sample.labels["direction"], sample.labels["node"])
            rows.setdefault(key, {})[sample.labels["result"]] = sample.value
    lines = [f"  {'direction':<16} {'node':<18} {'ok':>5} {'unmapped':>9} {'error':>6}"]
    for (direction, node), counts in sorted(rows.items()):
        lines.append(
            f"  {direction:<16} {node:<18} {counts.get('ok', 0):>5.0f} "
            f"{counts.get('unmapped', 0):>9.0f} {counts.get('error', 0):>6.0f}"
        )
    return lines


async def run_demo(calls: int = 1, out: TextIO = sys.stdout) -> int:
    """Run every scenario `calls` times on each of `DEMO_RUNS`; return 0 iff all held."""
    logging.getLogger("bridge").setLevel(logging.ERROR)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    sim = VGEndpointSim()
    await sim.start()
    config = parse_config(demo_config(sim.url()), env={})
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    print(
        f"acvg-bridge demo: bridge on {base_url}/ac/support and {base_url}/ac/support_async, "
        f"VG endpoint on {sim.url()}",
        file=out,
    )
    results: list[tuple[ScenarioResult, float]] = []
    try:
        async with aiohttp.ClientSession() as http:
            for run in DEMO_RUNS:
                for scenario in load_scenarios():
                    for _ in range(max(1, calls)):
                        started = time.perf_counter()
                        result = await run_scenario(
                            scenario,
                            base_url,
                            DEMO_TOKEN,
                            session=http,
                            transport=run.transport,
                            async_mode=run.async_mode,
                            route=run.route,
                            settle=SETTLE_SECONDS,
                        )
                        results.append((result, time.perf_counter() - started))
                        print(result.render(), file=out)
        print("\nTranslations by node:", file=out)
        for line in _node_table(app):
            print(line, file=out)
    finally:
        await runner.cleanup()
        await sim.stop()
    return _summary(results, app, out)


def _summary(results: list[tuple[ScenarioResult, float]], app: web.Application, out: TextIO) -> int:
    turn_metric = app[GatewayKey].metrics.turn_duration
    print("\nSummary:", file=out)
    print(
        f"  {'scenario':<18} {'result':<6} {'route':<14} {'transport/mode':<16} {'seconds':>8}",
        file=out,
    )
    for result, seconds in results:
        verdict = "PASS" if result.passed else "FAIL"
        via = f"{result.transport}/{result.mode}"
        print(
            f"  {result.name:<18} {verdict:<6} {result.route or '':<14} {via:<16} {seconds:>8.3f}",
            file=out,
        )
    durations = [seconds for _, seconds in results]
    passed = sum(1 for result, _ in results if result.passed)
    held: dict[str, bool] = {}
    for result, _ in results:
        held[result.name] = held.get(result.name, True) and result.passed
    ways = len({(r.route, r.transport, r.mode) for r, _ in results})
    count = sum(
        sample.value
        for metric in turn_metric.collect()
        for sample in metric.samples
        if sample.name.endswith("_count")
    )
    print(
        f"\n{sum(held.values())}/{len(held)} scenarios held on all {ways} transports/modes "
        f"({passed}/{len(results)} calls); {count:.0f} turns; call time "
        f"p50 {_percentile(durations, 50):.3f}s, max {max(durations, default=0.0):.3f}s",
        file=out,
    )
    return 0 if passed == len(results) else 1
