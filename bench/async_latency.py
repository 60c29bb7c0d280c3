"""Delivery latency of an async output: from the jambonz app sending a `command redirect` to
VAIC receiving the translated activity on the push socket.

Everything runs in one process on loopback (so the app and VAIC share a clock): a minimal
jambonz WS app, the bridge with one async-mode route, and a VAIC client with the push socket
open. The app writes its send time into each `say` text; the client reads it back on arrival.

    python -m bench.async_latency [--outputs 5000] [--calls 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from bridge.app import create_app
from bridge.config import parse_config

TOKEN = "bench"


async def start_app(outputs_per_call: int, gap_s: float) -> tuple[web.AppRunner, int]:
    """A jambonz app: greets with a gather; on the first hook, acks empty and then sends
    `outputs_per_call` redirect commands (queueCommand true), each a say stamped with its time."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=["ws.jambonz.org"])
        await ws.prepare(request)
        async for msg in ws:
            frame = json.loads(msg.data)
            if frame["type"] == "session:new":
                gather = {"verb": "gather", "input": ["speech"], "actionHook": "voice"}
                await ws.send_json({"type": "ack", "msgid": frame["msgid"], "data": [gather]})
            elif frame["type"] == "verb:hook":
                await ws.send_json({"type": "ack", "msgid": frame["msgid"]})
                for _ in range(outputs_per_call):
                    await asyncio.sleep(gap_s)
                    say = {"verb": "say", "text": f"{time.perf_counter():.9f}"}
                    await ws.send_json(
                        {
                            "type": "command",
                            "command": "redirect",
                            "queueCommand": True,
                            "data": [say],
                        }
                    )
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def one_call(http: aiohttp.ClientSession, base: str, outputs: int) -> list[float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(
        f"{base}/ac/bench", json={"conversation": str(uuid.uuid4())}, headers=headers
    ) as resp:
        urls = await resp.json()
    ws = await http.ws_connect(
        base.replace("http", "ws", 1) + urls["websocketURL"], headers=headers
    )
    start = {
        "id": str(uuid.uuid4()),
        "type": "event",
        "name": "start",
        "parameters": {"caller": "+4921154591991", "callee": "+18005550100"},
    }
    async with http.post(
        base + urls["activitiesURL"], json={"activities": [start]}, headers=headers
    ):
        pass
    said = {"id": str(uuid.uuid4()), "type": "message", "text": "go"}
    async with http.post(
        base + urls["activitiesURL"], json={"activities": [said]}, headers=headers
    ):
        pass
    latencies: list[float] = []
    while len(latencies) < outputs:
        msg = await asyncio.wait_for(ws.receive(), 10)
        arrived = time.perf_counter()
        for activity in json.loads(msg.data)["activities"]:
            if activity.get("type") == "message":
                latencies.append(arrived - float(activity["text"]))
    await ws.close()
    async with http.post(base + urls["disconnectURL"], json={}, headers=headers):
        pass
    return latencies


async def main(total: int, calls: int, gap_ms: float) -> dict[str, Any]:
    per_call = max(1, total // calls)
    app_runner, app_port = await start_app(per_call, gap_ms / 1000)
    config = parse_config(
        yaml.safe_dump(
            {
                "routes": {
                    "bench": {
                        "token": TOKEN,
                        "async_mode": True,
                        "voicegateway": {"url": f"ws://127.0.0.1:{app_port}/"},
                    }
                }
            }
        ),
        env={},
    )
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as http:
            results = await asyncio.gather(*(one_call(http, base, per_call) for _ in range(calls)))
    finally:
        await runner.cleanup()
        await app_runner.cleanup()
    latencies = sorted(x * 1000 for call in results for x in call)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "outputs": len(latencies),
        "calls": calls,
        "median_ms": statistics.median(latencies),
        "p99_ms": q[98],
        "max_ms": latencies[-1],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--gap-ms", type=float, default=2.0, help="app's pause between outputs")
    args = parser.parse_args()
    figures = asyncio.run(main(args.outputs, args.calls, args.gap_ms))
    print(
        f"async output delivery over {figures['outputs']} outputs ({figures['calls']} calls): "
        f"median {figures['median_ms']:.3f} ms, p99 {figures['p99_ms']:.3f} ms, "
        f"max {figures['max_ms']:.3f} ms"
    )
