"""The benchmark runner: every configuration of bench/configs.py measured side by side in one
run, results written to docs/benchmarks.md (table) and docs/benchmarks.png (latency vs load).

Processes on loopback: the simulators (legacy AudioCodes bot + VG endpoint), nginx, the bridge
(`python -m bridge serve`, pinned to core 0 with nginx when there are two cores or more; CPU and
RSS read from /proc) and this load generator (the other cores). Phases of the configurations are
interleaved round by round so all see the same machine; figures are medians over the rounds.

    python -m bench [--rounds 3] [--seconds 4] [--calls 32] [--idle-calls 5000] [--out docs]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench import loadgen
from bench.configs import (
    BY_NAME,
    CONFIGURATIONS,
    SHADOW_MAX_CPU,
    TOKEN,
    Configuration,
    Hop,
    bridge_config,
)
from bench.configs import nginx_config as make_nginx_config
from bench.procs import bridge_command, cpu_seconds, free_port, rss_bytes, wait_http

BRIDGE_CPU = 0
LEVELS = (0.5, 0.8)
# Which configuration's saturation sets the load of the others (same load: comparable latency).
LOAD_OF = {
    "direct": "passthrough",
    "nginx": "passthrough",
    "passthrough": "passthrough",
    "shadow": "passthrough",
    "shadow_guarded": "passthrough",
    "translated": "translated",
    "translated_ws": "translated_ws",
    "translated_uvloop": "translated",
    "vg_sim": "translated",
}
MARK_START = "<!-- bench:results -->"


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def pinned(cpu: int | None) -> list[str]:
    if cpu is None:
        return []
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(cpu)] if taskset else []


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


async def serve_sims(vg_port: int, legacy_port: int) -> None:
    from bridge.sim.legacy_endpoint import LegacyEndpointSim
    from bridge.sim.vg_endpoint import VGEndpointSim

    vg = VGEndpointSim(port=vg_port, record=False)
    async with vg, LegacyEndpointSim(token=TOKEN, port=legacy_port, record=False):
        await asyncio.Event().wait()


@dataclass
class Stack:
    """The running processes and the bot URL of every configuration."""

    tmp: Path
    cpu: int | None
    vg_port: int = field(default_factory=free_port)
    legacy_port: int = field(default_factory=free_port)
    nginx_port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # per event loop (`Configuration.loop`): the process and its port
    bridges: dict[str, tuple[subprocess.Popen[bytes], int]] = field(default_factory=dict)
    nginx: subprocess.Popen[bytes] | None = None
    bridge_port: int = 0

    def spawn(self, args: list[str], cpu: int | None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([*pinned(cpu), *args])
        self.procs.append(proc)
        return proc

    def start_bridge(self, loop: str = "asyncio") -> subprocess.Popen[bytes]:
        """A bridge on the benchmark's config and a fresh port (`self.bridge_port`)."""
        cfg = self.tmp / "bridge.yaml"
        cfg.write_text(yaml.safe_dump(bridge_config(self.vg_port, self.legacy_port)))
        self.bridge_port = free_port()
        return self.spawn(bridge_command(cfg, self.bridge_port, loop), self.cpu)

    async def start(self, with_nginx: bool, configs: list[Configuration]) -> None:
        sims_cpu = None if self.cpu is None else 1
        self.spawn(
            [
                sys.executable,
                "-m",
                "bench",
                "--serve-sims",
                str(self.vg_port),
                str(self.legacy_port),
            ],
            sims_cpu,
        )
        if with_nginx:
            conf = self.tmp / "nginx.conf"
            conf.write_text(
                make_nginx_config(str(self.tmp), self.nginx_port, self.legacy_port, self.cpu)
            )
            nginx = shutil.which("nginx") or "nginx"
            self.nginx = self.spawn([nginx, "-c", str(conf), "-p", str(self.tmp)], None)
        for loop in sorted({c.loop for c in configs if c.hop is Hop.BRIDGE}):
            self.bridges[loop] = (self.start_bridge(loop), self.bridge_port)
            await wait_http(f"http://127.0.0.1:{self.bridge_port}/healthz")
        await wait_http(f"http://127.0.0.1:{self.legacy_port}/")
        if with_nginx:
            await wait_http(f"http://127.0.0.1:{self.nginx_port}/")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM if proc is not self.nginx else signal.SIGQUIT)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    async def quiet(self, timeout_s: float = 5.0) -> None:
        """Until every server process is idle (the last phase's hang-ups and closing sockets
        done), so one phase's tail does not land in the next one's latencies."""
        pids = [p.pid for p in self.procs if p.poll() is None]
        deadline = time.monotonic() + timeout_s
        before = [cpu_seconds(pid) for pid in pids]
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            now = [cpu_seconds(pid) for pid in pids]
            if all(b - a < 0.01 for a, b in zip(before, now, strict=True)):  # < 5 % of a core
                return
            before = now

    def target(self, config: Configuration) -> loadgen.Target:
        mode = loadgen.Mode.WS if config.ws_mode else loadgen.Mode.HTTP
        if config.hop is Hop.DIRECT:
            return loadgen.Target(f"http://127.0.0.1:{self.legacy_port}/", TOKEN, mode)
        if config.hop is Hop.NGINX:
            return loadgen.Target(f"http://127.0.0.1:{self.nginx_port}/", TOKEN, mode)
        port = self.bridges[config.loop][1]
        return loadgen.Target(f"http://127.0.0.1:{port}/ac/{config.route}", TOKEN, mode)

    async def turns_by_role(self, config: Configuration) -> tuple[float, float] | None:
        """(primary, shadow) turns the bridge finished on the configuration's route so far,
        from `acvg_turn_duration_seconds_count`; None when the configuration has no shadow."""
        if config.hop is not Hop.BRIDGE or not config.route or "shadow" not in config.route:
            return None
        url = f"http://127.0.0.1:{self.bridges[config.loop][1]}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return turns_by_role(await resp.text(), config.route)

    async def measured(
        self, config: Configuration, phase: Awaitable[loadgen.Phase]
    ) -> tuple[loadgen.Phase, float | None]:
        """Run `phase` on a quiet stack; with the share of its primary turns that the shadow
        compared (None without shadow), read once the shadows finished."""
        await self.quiet()
        before = await self.turns_by_role(config)
        done = await phase
        if before is None:
            return done, None
        await self.quiet()
        after = await self.turns_by_role(config)
        assert after is not None
        primary, shadow = after[0] - before[0], after[1] - before[1]
        return done, (shadow / primary if primary else None)

    def cpu_probe(self, config: Configuration) -> loadgen.Probe | None:
        if config.hop is Hop.BRIDGE and config.loop in self.bridges:
            pid = self.bridges[config.loop][0].pid
            return lambda: cpu_seconds(pid)
        if config.hop is Hop.NGINX and self.nginx is not None:
            master = self.nginx.pid
            return lambda: sum(cpu_seconds(p) for p in [master, *children(master)])
        return None


def turns_by_role(exposition: str, route: str) -> tuple[float, float]:
    """(primary, shadow) turns finished on `route`, from a bridge's `/metrics` text."""
    counts = {"primary": 0.0, "shadow": 0.0}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "acvg_turn_duration_seconds_count"
                and labels.get("route") == route
                and labels.get("role") in counts
            ):
                counts[labels["role"]] += sample.value
    return counts["primary"], counts["shadow"]


@dataclass
class Results:
    rounds: int
    seconds: float
    calls: int
    saturation: dict[str, list[float]] = field(default_factory=dict)
    cpu_per_turn: dict[str, list[float]] = field(default_factory=dict)
    core_busy: dict[str, list[float]] = field(default_factory=dict)
    # (configuration, level) -> per round {p50, p99, p999, rate}
    latency: dict[tuple[str, float], list[dict[str, float]]] = field(default_factory=dict)
    # (configuration, level or "saturation") -> per round, the share of primary turns compared
    coverage: dict[tuple[str, float | str], list[float]] = field(default_factory=dict)
    errors: int = 0
    memory: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _rotated(items: list[Any], by: int) -> list[Any]:
    by %= len(items)
    return items[by:] + items[:by]


async def run_saturation(stack: Stack, res: Results, configs: list[Configuration]) -> None:
    for rnd in range(res.rounds):
        for config in _rotated(configs, rnd):
            probe = stack.cpu_probe(config)
            phase, covered = await stack.measured(
                config, loadgen.saturate(stack.target(config), res.calls, res.seconds, probe)
            )
            if covered is not None:
                res.coverage.setdefault((config.name, "saturation"), []).append(covered)
            res.errors += phase.errors
            res.saturation.setdefault(config.name, []).append(phase.rate)
            if probe is not None and phase.turns:
                res.cpu_per_turn.setdefault(config.name, []).append(phase.probed / phase.turns)
                res.core_busy.setdefault(config.name, []).append(phase.probed / phase.seconds)
            print(f"  round {rnd + 1} {config.name:>14}: {phase.rate:7.0f} turns/s", flush=True)


async def run_latency(stack: Stack, res: Results, configs: list[Configuration]) -> None:
    sat = {name: median(rates) for name, rates in res.saturation.items()}
    names = [c.name for c in configs]
    if any(c.baseline == "vg_sim" for c in configs):
        names.append("vg_sim")
    for rnd in range(res.rounds):
        for level in LEVELS:
            for name in _rotated(names, rnd):
                # a partial run (--configs) takes its load from what it measured
                load_of = LOAD_OF[name] if LOAD_OF[name] in sat else next(iter(sat))
                rate = level * sat[load_of]
                if rate <= 0:  # its saturation phase failed (counted in the errors)
                    continue
                if name == "vg_sim":
                    await stack.quiet()
                    phase = await loadgen.vg_direct(
                        f"ws://127.0.0.1:{stack.vg_port}/", res.calls, rate, res.seconds
                    )
                else:
                    config = BY_NAME[name]
                    phase, covered = await stack.measured(
                        config, loadgen.paced(stack.target(config), res.calls, rate, res.seconds)
                    )
                    if covered is not None:
                        res.coverage.setdefault((name, level), []).append(covered)
                res.errors += phase.errors
                ms = [x * 1000 for x in phase.latencies]
                res.latency.setdefault((name, level), []).append(
                    {
                        "p50": quantile(ms, 0.5),
                        "p99": quantile(ms, 0.99),
                        "p999": quantile(ms, 0.999),
                        # the phase's second half: what a guard that sheds load settles at
                        "p99_settled": quantile(ms[len(ms) // 2 :], 0.99),
                        "rate": phase.rate,
                    }
                )
                print(
                    f"  round {rnd + 1} {int(level * 100)}% {name:>14}: {phase.rate:6.0f}/s "
                    f"p50 {quantile(ms, 0.5):.2f} ms p99 {quantile(ms, 0.99):.2f} ms",
                    flush=True,
                )


def _ack_histogram(text: str) -> tuple[list[tuple[float, float]], float, float]:
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("acvg_vg_ack_seconds_bucket"):
            bound = re.search(r'le="([^"]+)"', line)
            if bound is not None:
                buckets.append((float(bound.group(1)), float(line.rsplit(" ", 1)[1])))
        elif line.startswith("acvg_vg_ack_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("acvg_vg_ack_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return buckets, total, count


async def run_memory(stack: Stack, res: Results, calls: int) -> None:
    """A fresh bridge; `calls` translated calls (each with its jambonz socket) opened and idle,
    then each doing one turn (busy); RSS deltas per call, session:new acks from /metrics."""
    bridge = stack.start_bridge()
    base = f"http://127.0.0.1:{stack.bridge_port}"
    await wait_http(f"{base}/healthz")
    target = loadgen.Target(f"{base}/ac/vg", TOKEN)
    warm = await loadgen.saturate(target, 16, 1.0)
    res.errors += warm.errors
    await asyncio.sleep(0.5)
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        _, sum0, count0 = _ack_histogram(await resp.text())
    rss0 = rss_bytes(bridge.pid)
    idle = await loadgen.open_idle(target, calls)
    await asyncio.sleep(1.0)
    rss_idle = rss_bytes(bridge.pid)
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        _, sum1, count1 = _ack_histogram(await resp.text())
    opened = len(idle.calls)
    rate = max(200.0, 0.5 * median(res.saturation.get("translated", [1000.0])))
    done = await idle.turn_each(rate)
    rss_busy = rss_bytes(bridge.pid)
    await idle.end()
    res.errors += idle.phase.errors
    starts = [x * 1000 for x in idle.phase.start_latencies]
    res.memory = {
        "calls": float(opened),
        "rss_base_mb": rss0 / 2**20,
        "idle_kb_per_call": (rss_idle - rss0) / 1024 / max(1, opened),
        "busy_kb_per_call": (rss_busy - rss0) / 1024 / max(1, opened),
        "busy_turns": float(done),
        "ack_mean_ms": 1000 * (sum1 - sum0) / max(1.0, count1 - count0),
        "acks": count1 - count0,
        "start_p50_ms": quantile(starts, 0.5),
        "start_p99_ms": quantile(starts, 0.99),
        "open_rate": opened / idle.phase.seconds if idle.phase.seconds else 0.0,
    }
    bridge.send_signal(signal.SIGTERM)
    bridge.wait(30)
    print(f"  memory: {res.memory}", flush=True)


def machine() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    mhz = re.search(r"cpu MHz\s*:\s*(.+)", cpuinfo)
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    binary = shutil.which("nginx")
    nginx = (
        subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stderr.strip()
        if binary
        else "no nginx"
    )
    return [
        f"CPU: {model.group(1) if model else platform.processor()}"
        + (f" ({float(mhz.group(1)):.0f} MHz)" if mhz else ""),
        f"cores (`nproc`): {os.cpu_count()}",
        f"memory: {int(mem.group(1)) / 2**20:.1f} GiB" if mem else "memory: unknown",
        f"kernel: {platform.release()}; Python {platform.python_version()}; {nginx}",
    ]


def _added(res: Results, name: str, level: float, key: str) -> float:
    """Median over rounds of (configuration - baseline) at the same load and round."""
    base = BY_NAME[name].baseline if name in BY_NAME else None
    mine = res.latency.get((name, level), [])
    if base is None:
        return median([r[key] for r in mine])
    theirs = res.latency.get((base, level), [])
    return median([a[key] - b[key] for a, b in zip(mine, theirs, strict=False)])


def _ratio_verdict(mine: float, theirs: float, factor: float) -> bool | None:
    """`mine <= factor * theirs`, or None (unclear) when a baseline's own p99 moved by more than
    the difference in this run (an added latency at or below zero)."""
    if not (mine > 0 and theirs > 0):
        return None
    return mine <= factor * theirs


def verdicts(res: Results) -> list[tuple[str, str, bool | None]]:
    sat = {k: median(v) for k, v in res.saturation.items()}
    cpu = {k: median(v) for k, v in res.cpu_per_turn.items()}
    out: list[tuple[str, str, bool | None]] = []
    if "translated" in sat:
        p99 = _added(res, "translated", 0.5, "p99")
        capacity = 1 / cpu["translated"] if cpu.get("translated") else float("nan")
        out.append(
            (
                "translated ≥ 2,000 turns/s, added p99 ≤ 1 ms at 50 %",
                f"{sat['translated']:,.0f} turns/s measured (bridge core "
                f"{100 * median(res.core_busy.get('translated', [])):.0f} % busy; CPU-bound "
                f"capacity {capacity:,.0f}/s), added p99 {p99:.2f} ms",
                sat["translated"] >= 2000 and p99 <= 1.0 if p99 > 0 else None,
            )
        )
    if "passthrough" in sat and "nginx" in sat:
        mine, theirs = _added(res, "passthrough", 0.5, "p99"), _added(res, "nginx", 0.5, "p99")
        out.append(
            (
                "pass-through added p99 ≤ 1.5x nginx's (50 % load)",
                f"{mine:.2f} ms vs nginx {theirs:.2f} ms (x{mine / theirs:.1f})"
                if theirs > 0
                else f"{mine:.2f} ms vs nginx {theirs:.2f} ms",
                _ratio_verdict(mine, theirs, 1.5),
            )
        )
    if "shadow" in cpu and "passthrough" in cpu:
        ratio = cpu["shadow"] / cpu["passthrough"]
        mine, theirs = _added(res, "shadow", 0.5, "p99"), _added(res, "passthrough", 0.5, "p99")
        out.append(
            (
                "shadow CPU/turn ≤ 1.6x shadow off",
                f"x{ratio:.2f} ({cpu['shadow'] * 1000:.2f} vs {cpu['passthrough'] * 1000:.2f} ms)",
                ratio <= 1.6,
            )
        )
        out.append(
            (
                "shadow: primary added p99 within 10 % (50 % of pass-through load)",
                f"{mine:.2f} ms vs {theirs:.2f} ms",
                _ratio_verdict(mine, theirs, 1.1),
            )
        )
    if "shadow_guarded" in cpu and "passthrough" in cpu:
        mine, theirs = (
            _added(res, "shadow_guarded", 0.5, "p99"),
            _added(res, "passthrough", 0.5, "p99"),
        )
        shares = res.coverage.get(("shadow_guarded", 0.5))
        covered = f", {median(shares):.0%} of the turns compared" if shares else ""
        if all("p99_settled" in r for r in res.latency.get(("shadow_guarded", 0.5), [{}])):
            settled = (
                _added(res, "shadow_guarded", 0.5, "p99_settled"),
                _added(res, "passthrough", 0.5, "p99_settled"),
            )
            covered += "; second half of each phase: {:.2f} vs {:.2f} ms".format(*settled)
        out.append(
            (
                f"shadow shed above {SHADOW_MAX_CPU:.0%} busy: primary added p99 within 10 % "
                "(50 % of pass-through load)",
                f"{mine:.2f} ms vs {theirs:.2f} ms{covered}",
                _ratio_verdict(mine, theirs, 1.1),
            )
        )
    if res.memory:
        kb, n = res.memory["idle_kb_per_call"], int(res.memory["calls"])
        out.append(
            (
                "≤ 40 KB RSS per idle call at 5,000 calls",
                f"{kb:.1f} KB at {n:,} calls" + ("" if n >= 5000 else " (scaled down)"),
                kb <= 40 and n >= 5000,
            )
        )
    return out


def table(res: Results) -> str:
    sat = {k: median(v) for k, v in res.saturation.items()}
    lines = [
        "| configuration | turns/s at saturation | core busy | CPU/turn | CPU-bound capacity | "
        "added p50 / p99 / p99.9 at 50 % (ms) | added p50 / p99 / p99.9 at 80 % (ms) | "
        "load at 50 % / 80 % (turns/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config in CONFIGURATIONS:
        name = config.name
        if name not in sat:
            continue
        cells = []
        for level in LEVELS:
            cells.append(
                " / ".join(f"{_added(res, name, level, k):.2f}" for k in ("p50", "p99", "p999"))
            )
        rates = " / ".join(
            f"{median([r['rate'] for r in res.latency.get((name, lv), [])]):,.0f}" for lv in LEVELS
        )
        busy = res.core_busy.get(name)
        cpu = res.cpu_per_turn.get(name)
        lines.append(
            f"| {config.label} | {sat[name]:,.0f} | "
            + (f"{100 * median(busy):.0f} %" if busy else "-")
            + " | "
            + (f"{1000 * median(cpu):.3f} ms | {1 / median(cpu):,.0f}/s" if cpu else "- | -")
            + f" | {cells[0]} | {cells[1]} | {rates} |"
        )
    lines.append("")
    lines.append(
        "Absolute turn latency seen by the load generator (median over rounds, p50 / p99 ms):"
    )
    lines.append("")
    lines.append("| configuration | at 50 % | at 80 % |")
    lines.append("|---|---:|---:|")
    for name in [c.name for c in CONFIGURATIONS] + ["vg_sim"]:
        cells = []
        for level in LEVELS:
            rows = res.latency.get((name, level), [])
            cells.append(
                f"{median([r['p50'] for r in rows]):.2f} / {median([r['p99'] for r in rows]):.2f}"
            )
        if res.latency.get((name, LEVELS[0])):
            label = BY_NAME[name].label if name in BY_NAME else "VG simulator alone (`vg_sim`)"
            lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    covered = [c for c in CONFIGURATIONS if (c.name, "saturation") in res.coverage]
    if covered:
        lines += [
            "",
            "Share of the primary's turns the shadow compared (median over rounds; shadows "
            "shed for load are not compared):",
            "",
            "| configuration | at saturation | at 50 % | at 80 % |",
            "|---|---:|---:|---:|",
        ]
        for config in covered:
            shares = [
                median(res.coverage.get((config.name, key), [float("nan")]))
                for key in ("saturation", *LEVELS)
            ]
            lines.append(f"| {config.label} | " + " | ".join(f"{x:.0%}" for x in shares) + " |")
    return "\n".join(lines)


def render(res: Results, elapsed: float) -> str:
    mem = res.memory
    out = [
        MARK_START,
        "",
        "## Results",
        "",
        f"Generated by `python -m bench --rounds {res.rounds} --seconds {res.seconds:g} "
        f"--calls {res.calls}` in {elapsed / 60:.1f} min"
        f" ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); {res.errors} failed turns.",
        "",
        "Machine: " + "; ".join(machine()) + ".",
        "",
        "### Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for name, measured, met in verdicts(res):
        word = "unclear (noisy baseline)" if met is None else "yes" if met else "no"
        out.append(f"| {name} | {measured} | {word} |")
    out += ["", "### Per configuration", "", table(res), ""]
    if mem:
        out += [
            "### Memory and `session:new`",
            "",
            f"A fresh bridge, {int(mem['calls']):,} translated calls opened over HTTP mode "
            f"({mem['open_rate']:.0f} calls/s), each started (its jambonz socket open, the first "
            f"prompt answered), then left idle; then one turn on each ({int(mem['busy_turns']):,} "
            "turns).",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| bridge RSS before the calls | {mem['rss_base_mb']:.1f} MB |",
            f"| RSS per idle call | {mem['idle_kb_per_call']:.1f} KB |",
            f"| RSS per call after a turn each (busy) | {mem['busy_kb_per_call']:.1f} KB |",
            f"| `session:new` ack latency seen by the bridge, mean over {int(mem['acks']):,} "
            f"(`acvg_vg_ack_seconds`) | {mem['ack_mean_ms']:.2f} ms |",
            f"| call start at VAIC (create + `start` → first prompt), p50 / p99 | "
            f"{mem['start_p50_ms']:.2f} / {mem['start_p99_ms']:.2f} ms |",
        ]
        vg = res.latency.get(("vg_sim", LEVELS[0]))
        if vg:
            out.append("")
    out += [f"- {n}" for n in res.notes]
    out.append("")
    out.append("![latency vs load](benchmarks.png)")
    out.append("")
    return "\n".join(out)


def write_doc(path: Path, generated: str) -> None:
    intro = path.read_text().split(MARK_START)[0] if path.exists() else "# Benchmarks\n\n"
    path.write_text(intro.rstrip() + "\n\n" + generated)


@contextmanager
def stack_running(cpu: int | None) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="acvg-bench-") as tmp:
        stack = Stack(Path(tmp), cpu)
        try:
            yield stack
        finally:
            stack.stop()


async def main(args: argparse.Namespace) -> Results:
    cpu = BRIDGE_CPU if (os.cpu_count() or 1) >= 2 else None
    if cpu is not None:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - {cpu})
    res = Results(args.rounds, args.seconds, args.calls)
    # The bridge inherits the limit: 5,000 idle calls hold twice as many sockets there.
    loadgen.raise_fd_limit(2 * args.idle_calls + 1024)
    with_nginx = shutil.which("nginx") is not None
    wanted = set(args.configs.split(",")) if args.configs else set(BY_NAME)
    configs = [
        c for c in CONFIGURATIONS if c.name in wanted and (with_nginx or c.hop is not Hop.NGINX)
    ]
    if not with_nginx:
        res.notes.append("nginx not found: its row is missing (`apt-get install -y nginx`).")
    if cpu is None:
        res.notes.append("one core only: nothing pinned; the load shares the bridge's core.")
    with stack_running(cpu) as stack:
        await stack.start(with_nginx, configs)
        print("warm-up", flush=True)
        for config in configs:
            await loadgen.saturate(stack.target(config), 8, 0.5)
        print("saturation", flush=True)
        await run_saturation(stack, res, configs)
        print("latency", flush=True)
        await run_latency(stack, res, configs)
        if args.idle_calls > 0:
            print("memory", flush=True)
            await run_memory(stack, res, args.idle_calls)
    return res


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-sims":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        uvloop.run(serve_sims(int(sys.argv[2]), int(sys.argv[3])))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one phase")
    parser.add_argument("--calls", type=int, default=32, help="concurrent calls per phase")
    parser.add_argument("--idle-calls", type=int, default=5000, help="0 skips the memory phase")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument(
        "--configs",
        help=f"comma-separated subset of: {', '.join(BY_NAME)} (default: all; a partial run "
        "cannot fill every target row)",
    )
    args = parser.parse_args()
    began = time.monotonic()
    results = uvloop.run(main(args))
    elapsed = time.monotonic() - began
    args.out.mkdir(parents=True, exist_ok=True)
    write_doc(args.out / "benchmarks.md", render(results, elapsed))
    try:
        from bench.plot import plot
    except ImportError:
        print("matplotlib missing: no plot (pip install -e '.[bench]')", file=sys.stderr)
    else:
        plot(results, args.out / "benchmarks.png")
    print(f"wrote {args.out / 'benchmarks.md'} in {elapsed:.0f} s")
