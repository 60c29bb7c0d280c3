"""What shared state costs a turn: the bridge alone (state in memory) against the bridge with
`cluster.redis_url` (each turn's snapshot written to Redis before VAIC gets its outputs),
measured side by side in one run, open loop at a fixed rate.

One bridge process at a time (`python -m bridge serve`, its CPU read from /proc), a real
`redis-server`, the simulated Cognigy VG endpoint and the VAIC load in this process. Calls are
created and greeted first; then `--rate` turns/s are spread over them (one turn in flight per
call) for `--seconds`. The two set-ups alternate for `--rounds` rounds; medians are reported.

    python -m bench.cluster_cost [--calls 200] [--rate 200] [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.procs import bridge_command, cpu_seconds, free_port, wait_http
from bridge.sim.scenario import load_scenarios, step_activity
from bridge.sim.vaic import stamp
from bridge.sim.vg_endpoint import VGEndpointSim

TOKEN = "bench"
SCENARIO = next(s for s in load_scenarios() if s.name == "spoken_answer")  # step 1 loops


def _config(vg_url: str, redis_url: str | None, port: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "drain_timeout_s": 0,  # the phase is over: end its calls at once
        "routes": {"r": {"token": TOKEN, "max_calls": 100_000, "voicegateway": {"url": vg_url}}},
    }
    if redis_url is not None:
        doc["cluster"] = {
            "redis_url": redis_url,
            "instance_id": "bench",
            "advertise_url": f"http://127.0.0.1:{port}",
        }
    return doc


async def _turn(http: aiohttp.ClientSession, base: str, conversation: str, step: int) -> float:
    activity = stamp(step_activity(SCENARIO.steps[step], SCENARIO, conversation), datetime.now(UTC))
    started = time.perf_counter()
    async with http.post(
        f"{base}/ac/r/conversation/{conversation}/activities",
        json={"activities": [activity]},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as reply:
        await reply.read()
        if reply.status != 200:
            raise RuntimeError(f"turn answered {reply.status}")
    return time.perf_counter() - started


async def _phase(
    vg_url: str, redis_url: str | None, calls: int, rate: float, seconds: float
) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bridge.yaml"
        config.write_text(yaml.safe_dump(_config(vg_url, redis_url, port)))
        bridge = subprocess.Popen(bridge_command(config, port))
        base = f"http://127.0.0.1:{port}"
        try:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                await wait_http(f"{base}/healthz", http=http)
                ids = [str(uuid.uuid4()) for _ in range(calls)]
                for conversation in ids:
                    async with http.post(
                        f"{base}/ac/r",
                        json={"conversation": conversation},
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    ) as reply:
                        await reply.read()
                await asyncio.gather(*(_turn(http, base, c, 0) for c in ids))
                latencies: list[float] = []
                busy: set[str] = set()
                skipped = 0

                async def one(conversation: str) -> None:
                    try:
                        latencies.append(await _turn(http, base, conversation, 1))
                    finally:
                        busy.discard(conversation)

                tasks: list[asyncio.Task[None]] = []
                cpu0, wall0 = cpu_seconds(bridge.pid), time.perf_counter()
                total = int(rate * seconds)
                for n in range(total):
                    due = wall0 + n / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    conversation = ids[n % calls]
                    if conversation in busy:
                        skipped += 1
                        continue
                    busy.add(conversation)
                    tasks.append(asyncio.create_task(one(conversation)))
                await asyncio.gather(*tasks)
                cpu = cpu_seconds(bridge.pid) - cpu0
        finally:
            bridge.terminate()
            bridge.wait(20)
    latencies.sort()
    return {
        "turns": len(latencies),
        "skipped": skipped,
        "cpu_ms_per_turn": 1000 * cpu / max(1, len(latencies)),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


async def run(calls: int, rate: float, seconds: float, rounds: int) -> dict[str, dict[str, float]]:
    redis_port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        redis = subprocess.Popen(
            [
                "redis-server", "--bind", "127.0.0.1", "--port", str(redis_port),
                "--save", "", "--appendonly", "no", "--dir", tmp,
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            async with VGEndpointSim(record=False) as sim:
                results: dict[str, list[dict[str, float]]] = {"memory": [], "redis": []}
                for _ in range(rounds):
                    for name, url in (
                        ("memory", None),
                        ("redis", f"redis://127.0.0.1:{redis_port}/0"),
                    ):
                        results[name].append(await _phase(sim.url(), url, calls, rate, seconds))
        finally:
            redis.terminate()
            redis.wait(10)
    return {
        name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for name, runs in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    figures = asyncio.run(run(args.calls, args.rate, args.seconds, args.rounds))
    print(f"{'':8} {'turns':>7} {'CPU ms/turn':>12} {'p50 ms':>8} {'p99 ms':>8}")
    for name, f in figures.items():
        print(
            f"{name:8} {f['turns']:7.0f} {f['cpu_ms_per_turn']:12.3f} "
            f"{f['p50_ms']:8.2f} {f['p99_ms']:8.2f}"
        )
    ratio = figures["redis"]["cpu_ms_per_turn"] / figures["memory"]["cpu_ms_per_turn"]
    print(f"redis / memory CPU per turn: {ratio:.2f}x")


if __name__ == "__main__":
    main()
