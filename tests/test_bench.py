"""The benchmark harness (bench/) must keep working: its load generator drives real turns through
the simulators and an in-process bridge in every mode, and the runner renders its report.
Correctness only: no timing is asserted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
import yaml
from aiohttp import web

from bench import loadgen
from bench import replay as replay_bench
from bench.__main__ import LEVELS, Results, render, turns_by_role, verdicts
from bench.configs import CONFIGURATIONS, TOKEN, bridge_config, nginx_config
from bridge.app import create_app
from bridge.config import parse_config
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.vg_endpoint import VGEndpointSim


@dataclass
class Peers:
    legacy: LegacyEndpointSim
    vg: VGEndpointSim
    bridge_url: str


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    async with VGEndpointSim() as vg, LegacyEndpointSim(token=TOKEN) as legacy:
        config = parse_config(yaml.safe_dump(bridge_config(vg.port, legacy.port)), env={})
        runner = web.AppRunner(create_app(config))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield Peers(legacy, vg, f"http://127.0.0.1:{runner.addresses[0][1]}")
        finally:
            await runner.cleanup()


async def test_saturate_direct_and_through_the_bridge(peers: Peers) -> None:
    targets = [
        loadgen.Target(peers.legacy.url(), TOKEN),
        loadgen.Target(f"{peers.bridge_url}/ac/pass", TOKEN),
        loadgen.Target(f"{peers.bridge_url}/ac/vg", TOKEN),
        loadgen.Target(f"{peers.bridge_url}/ac/vg", TOKEN, loadgen.Mode.WS),
    ]
    for target in targets:
        ticks = iter(range(1000))

        def probe(ticks: Iterator[int] = ticks) -> float:
            return float(next(ticks))

        phase = await loadgen.saturate(target, 4, 0.4, probe=probe)
        assert phase.errors == 0, target
        assert phase.turns > 0 and len(phase.latencies) == phase.turns
        assert len(phase.start_latencies) == 4
        assert phase.probed == 1.0  # read once as the turns begin, once as they end
    # each call did its turns on the legacy bot and was hung up
    direct = [c for c in peers.legacy.calls.values() if c.disconnect is not None]
    assert len(direct) >= 8 and all(len(c.turns) >= 2 for c in direct)


async def test_shadow_coverage_is_read_from_the_bridge_metrics(peers: Peers) -> None:
    async with aiohttp.ClientSession() as http:

        async def turns() -> tuple[float, float]:
            async with http.get(f"{peers.bridge_url}/metrics") as resp:
                return turns_by_role(await resp.text(), "shadow")

        assert await turns() == (0.0, 0.0)
        phase = await loadgen.saturate(
            loadgen.Target(f"{peers.bridge_url}/ac/shadow", TOKEN), 2, 0.3
        )
        assert phase.errors == 0
        for _ in range(100):  # the shadows finish their last turns after the primaries
            primary, shadow = await turns()
            if shadow == primary:
                break
            await asyncio.sleep(0.05)
        assert primary >= phase.turns > 0  # the start turns count too
        assert shadow == primary


async def test_paced_idle_and_vg_direct(peers: Peers) -> None:
    target = loadgen.Target(f"{peers.bridge_url}/ac/vg", TOKEN)
    phase = await loadgen.paced(target, 4, 40.0, 0.5)
    assert phase.errors == 0 and phase.turns > 0
    idle = await loadgen.open_idle(target, 6)
    try:
        assert len(idle.calls) == 6 and idle.phase.errors == 0
        assert await idle.turn_each(100.0) == 6
    finally:
        await idle.end()
    direct = await loadgen.vg_direct(peers.vg.url(), 3, 30.0, 0.3)
    assert len(direct.start_latencies) == 3 and direct.turns > 0
    hooks = [m for c in peers.vg.calls.values() for m in c.messages("verb:hook")]
    assert len(hooks) >= direct.turns


def test_report_and_nginx_config() -> None:
    res = Results(rounds=1, seconds=1.0, calls=2)
    for config in CONFIGURATIONS:
        res.saturation[config.name] = [1000.0]
        res.cpu_per_turn[config.name] = [0.0004]
        res.core_busy[config.name] = [0.5]
    for name in [c.name for c in CONFIGURATIONS] + ["vg_sim"]:
        for level in LEVELS:
            res.latency[(name, level)] = [{"p50": 1.0, "p99": 2.0, "p999": 3.0, "rate": 500.0}]
    text = render(res, 60.0)
    for config in CONFIGURATIONS:
        assert f"| {config.label} | 1,000 |" in text
    assert len(verdicts(res)) == 5  # no memory phase: no memory verdict
    assert "turns compared" not in text and "nan" not in text  # no coverage measured
    for key in ("saturation", *LEVELS):
        res.coverage[("shadow_guarded", key)] = [0.25]
        res.coverage[("shadow", key)] = [1.0]
    text = render(res, 60.0)
    assert "| bridge pass-through + shadow | 100% | 100% | 100% |" in text
    assert "25% of the turns compared" in text
    conf = nginx_config("/tmp/x", 8081, 9091, 0)
    assert "listen 127.0.0.1:8081;" in conf and "server 127.0.0.1:9091;" in conf
    assert "worker_cpu_affinity 1;" in conf


def test_a_target_against_a_baseline_noisier_than_the_difference_is_unclear() -> None:
    res = Results(rounds=1, seconds=1.0, calls=2)
    for name in ("direct", "nginx", "passthrough", "shadow"):
        res.saturation[name] = [1000.0]
    res.cpu_per_turn.update({"nginx": [0.0001], "passthrough": [0.0003], "shadow": [0.0004]})
    p99 = {"direct": 5.0, "nginx": 2.0, "passthrough": 3.0, "shadow": 6.0}  # direct's outlier
    for name, value in p99.items():
        res.latency[(name, 0.5)] = [{"p50": 1.0, "p99": value, "p999": value, "rate": 500.0}]
    found = {target: met for target, _, met in verdicts(res)}
    assert found["pass-through added p99 ≤ 1.5x nginx's (50 % load)"] is None
    assert found["shadow CPU/turn ≤ 1.6x shadow off"] is True
    assert "| unclear (noisy baseline) |" in render(res, 1.0)
    res.latency[("direct", 0.5)] = [{"p50": 1.0, "p99": 1.0, "p999": 1.0, "rate": 500.0}]
    found = {target: met for target, _, met in verdicts(res)}
    assert found["pass-through added p99 ≤ 1.5x nginx's (50 % load)"] is False  # 2.0 vs 1.0
    assert found["shadow: primary added p99 within 10 % (50 % of pass-through load)"] is False


async def test_replay_bench_quick() -> None:
    """`python -m bench.replay --quick`: every call recorded, none dropped, and the journal
    replayed at each concurrency, every turn matching what was recorded."""
    opts = replay_bench.QUICK
    result = await replay_bench.run(opts)
    rows = result["recording"]
    wanted = {(path, on) for path in replay_bench.ROUTES.values() for on in (False, True)}
    assert {(r["path"], r["record"]) for r in rows} == wanted
    for row in rows:
        assert row["errors"] == 0 and row["dropped"] == 0, row
        assert row["calls"] > 0 and row["turns"] == row["calls"] * opts.turns_per_call
        assert row["journal_calls"] == (row["calls"] if row["record"] else 0)
        assert (row["journal_bytes_per_call"] > 0) == row["record"]
        assert ("cpu_ratio" in row) == row["record"]
    replayed = result["replay"]
    journal = replayed["journal"]
    assert journal["calls"] == opts.replay_calls and journal["errors"] == journal["dropped"] == 0
    assert [r["concurrency"] for r in replayed["runs"]] == list(opts.concurrency)
    for run in replayed["runs"]:
        assert run["replayed"] == run["calls"] == opts.replay_calls and run["errors"] == 0
        assert run["turns"] == run["turns_matched"] == journal["turns"]
        assert run["calls_per_s"] > 0 and run["turns_per_s"] > 0
    assert len(replay_bench.report(result)) == 3 + len(rows) + 3 + len(replayed["runs"])
