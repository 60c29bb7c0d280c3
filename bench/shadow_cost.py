"""What shadowing costs: bridge CPU per turn and the primary's turn latency, shadow on vs off.

Three processes on loopback: the simulators (legacy AudioCodes endpoint + VG endpoint), the
bridge (`acvg-bridge serve`, its CPU read from /proc), and this load generator. Two routes on
one bridge, both served by the legacy path: `plain` (shadow off) and `shadowed` (shadow on, the
voicegateway path mirrored). Rounds alternate between the two so both see the same machine.

    python -m bench.shadow_cost [--calls 200] [--concurrency 20] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.procs import bridge_command, cpu_seconds, free_port, wait_http

TOKEN = "bench"
CALLER_BASE = 4915112300000
TURNS = ["What are your opening hours", "I want to pay my bill", "Fifty euros"]


async def serve_sims(vg_port: int, legacy_port: int) -> None:
    from bridge.sim.legacy_endpoint import LegacyEndpointSim
    from bridge.sim.vg_endpoint import VGEndpointSim

    async with VGEndpointSim(port=vg_port), LegacyEndpointSim(token=TOKEN, port=legacy_port):
        await asyncio.Event().wait()


async def one_call(http: aiohttp.ClientSession, base: str, route: str, n: int) -> list[float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
        async with http.post(base + url, json=body, headers=headers) as resp:
            answer: dict[str, Any] = await resp.json()
            return answer

    urls = await post(f"/ac/{route}", {"conversation": str(uuid.uuid4())})
    start = {
        "id": str(uuid.uuid4()),
        "type": "event",
        "name": "start",
        "parameters": {"caller": f"+{CALLER_BASE + n}", "callee": "+4930111000"},
    }
    latencies = []
    for activity in [start] + [{"type": "message", "text": t} for t in TURNS]:
        activity = {"id": str(uuid.uuid4()), **activity}
        began = time.perf_counter()
        await post(urls["activitiesURL"], {"activities": [activity]})
        latencies.append(time.perf_counter() - began)
    await post(urls["disconnectURL"], {"reasonCode": "client-disconnected"})
    return latencies


async def run_round(
    base: str, route: str, calls: int, concurrency: int, offset: int
) -> list[float]:
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2)) as http:

        async def limited(n: int) -> list[float]:
            async with semaphore:
                return await one_call(http, base, route, offset + n)

        results = await asyncio.gather(*(limited(n) for n in range(calls)))
    return [x for call in results for x in call]


def config(vg_port: int, legacy_port: int) -> dict[str, Any]:
    upstreams = {
        "voicegateway": {"url": f"ws://127.0.0.1:{vg_port}/"},
        "legacy": {"url": f"http://127.0.0.1:{legacy_port}/", "token": TOKEN},
    }
    base = {"token": TOKEN, "turn_settle_ms": 50, **upstreams}
    return {
        "routes": {
            "plain": {**base, "migration": {"force": "legacy", "shadow": False}},
            "shadowed": {**base, "migration": {"force": "legacy", "shadow": True}},
        }
    }


async def main(calls: int, concurrency: int, rounds: int) -> dict[str, dict[str, float]]:
    vg_port, legacy_port, bridge_port = free_port(), free_port(), free_port()
    sims = subprocess.Popen(
        [sys.executable, "-m", "bench.shadow_cost", "--serve-sims", str(vg_port), str(legacy_port)]
    )
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.yaml"
        cfg.write_text(yaml.safe_dump(config(vg_port, legacy_port)))
        bridge = subprocess.Popen(bridge_command(cfg, bridge_port))
        base = f"http://127.0.0.1:{bridge_port}"
        try:
            await wait_http(f"{base}/healthz")
            await wait_http(f"http://127.0.0.1:{legacy_port}/")
            figures: dict[str, dict[str, list[float]]] = {
                r: {"latency": [], "cpu": [], "turns": []} for r in ("plain", "shadowed")
            }
            await run_round(base, "plain", 20, concurrency, 0)  # warm-up
            for index in range(rounds * 2):
                route = ("plain", "shadowed")[index % 2]
                before = cpu_seconds(bridge.pid)
                latencies = await run_round(base, route, calls, concurrency, index * calls)
                await asyncio.sleep(0.5)  # let shadows finish their last turn
                figures[route]["cpu"].append(cpu_seconds(bridge.pid) - before)
                figures[route]["turns"].append(len(latencies))
                figures[route]["latency"].extend(latencies)
        finally:
            bridge.send_signal(signal.SIGTERM)
            sims.send_signal(signal.SIGTERM)
            bridge.wait(10)
            sims.wait(10)
    result = {}
    for route, data in figures.items():
        lat = sorted(x * 1000 for x in data["latency"])
        q = statistics.quantiles(lat, n=100, method="inclusive")
        result[route] = {
            "turns": sum(data["turns"]),
            "cpu_ms_per_turn": 1000 * sum(data["cpu"]) / sum(data["turns"]),
            "p50_ms": statistics.median(lat),
            "p99_ms": q[98],
        }
    return result


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-sims":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(serve_sims(int(sys.argv[2]), int(sys.argv[3])))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    out = asyncio.run(main(args.calls, args.concurrency, args.rounds))
    plain, shadowed = out["plain"], out["shadowed"]
    for route, f in out.items():
        print(
            f"{route:>9}: {f['turns']:.0f} turns, bridge CPU {f['cpu_ms_per_turn']:.3f} ms/turn, "
            f"turn latency p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms"
        )
    ratio = shadowed["cpu_ms_per_turn"] / plain["cpu_ms_per_turn"]
    print(
        f"shadow on/off: CPU per turn x{ratio:.2f},"
        f" primary p50 {shadowed['p50_ms'] - plain['p50_ms']:+.2f} ms,"
        f" p99 {shadowed['p99_ms'] - plain['p99_ms']:+.2f} ms"
    )
