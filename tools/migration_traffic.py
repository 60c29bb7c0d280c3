"""A bridge mid-migration on loopback, with simulated peers and calls on both paths.

Route `migration` has both upstreams (simulated Voice Gateway endpoint and a deliberately
divergent simulated legacy endpoint), half the calls on each path and shadow on, so every metric
family of design §2.4 gets samples. Route `fallback` points its Voice Gateway at a closed port,
so every call falls back to legacy; route `legacy_down` points its only upstream, legacy, at a
closed port, so its calls fail; route `busy` is shadowed under a core budget no running bridge
fits in (`shadow_max_cpu: 0.001`), so once the first second is measured its shadows are shed.
Used by the metrics and scrape tests;
`python -m tools.migration_traffic` serves it with calls in a loop, to look at the dashboards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import yaml
from aiohttp import web

from bridge.app import create_app
from bridge.config import parse_config
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.scenario import ScenarioResult, load_scenarios, run_scenario
from bridge.sim.vg_endpoint import VGEndpointSim
from bridge.transport.http_errors import JsonErrorRunner

TOKEN = "traffic-token"
ROUTES = ("migration", "fallback", "legacy_down", "busy")


def free_port() -> int:
    """A TCP port nothing listens on at the moment of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def traffic_config(vg_url: str, legacy_url: str, dead_port: int) -> str:
    common = {"token": TOKEN, "default_region": "DE", "turn_settle_ms": 150}
    routes = {
        "migration": {
            **common,
            "voicegateway": {"url": vg_url},
            "legacy": {"url": legacy_url},
            "migration": {"voicegateway_percent": 50, "sticky_key": "conversation", "shadow": True},
        },
        "fallback": {
            **common,
            "voicegateway": {"url": f"ws://127.0.0.1:{dead_port}/", "connect_timeout_ms": 500},
            "legacy": {"url": legacy_url},
            "migration": {"voicegateway_percent": 100},
        },
        "legacy_down": {**common, "legacy": {"url": f"http://127.0.0.1:{dead_port}/"}},
        "busy": {
            **common,
            "voicegateway": {"url": vg_url},
            "legacy": {"url": legacy_url},
            "migration": {"force": "legacy", "shadow": True, "shadow_max_cpu": 0.001},
        },
    }
    return yaml.safe_dump({"routes": routes}, sort_keys=False)


@dataclass
class Traffic:
    """The running bridge and what drives it."""

    app: web.Application
    base_url: str
    http: aiohttp.ClientSession
    played: int = 0

    async def calls(
        self, rounds: int = 1, *, route: str = "migration", limit: int | None = None
    ) -> list[ScenarioResult]:
        """Play every shipped scenario (the first `limit`) `rounds` times on `route`.
        Conversation ids are numbered, not random, so the 50 % split is the same on every run."""
        results = []
        for _ in range(rounds):
            self.played += 1
            for scenario in load_scenarios()[:limit]:
                results.append(
                    await run_scenario(
                        scenario,
                        self.base_url,
                        TOKEN,
                        session=self.http,
                        route=route,
                        conversation_id=f"traffic-{route}-{self.played}-{scenario.name}",
                        settle=0.05,
                    )
                )
        return results

    async def rejected(self) -> None:
        """One request with a wrong token and one for an unknown route."""
        for route, token in (("migration", "wrong"), ("x", "")):
            url = f"{self.base_url}/ac/{route}"
            async with self.http.post(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                await resp.read()

    async def run_until(self, stop: asyncio.Event) -> int:
        """Rounds of calls on both routes plus rejected requests until `stop` is set (the round
        under way finishes); returns the number of rounds."""
        rounds = 0
        while not stop.is_set():
            await self.calls()
            await self.calls(route="fallback")
            await self.calls(route="legacy_down", limit=1)
            await self.calls(route="busy", limit=1)
            await self.rejected()
            rounds += 1
        return rounds

    async def metrics_text(self) -> str:
        async with self.http.get(f"{self.base_url}/metrics") as resp:
            resp.raise_for_status()
            return await resp.text()


@contextlib.asynccontextmanager
async def running_traffic(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Traffic]:
    """Start both simulated endpoints and the bridge; stop them all on exit."""
    vg = VGEndpointSim()
    legacy = LegacyEndpointSim(divergent=True)
    await vg.start()
    await legacy.start()
    config = traffic_config(vg.url(), legacy.url(), free_port())
    app = create_app(parse_config(config, env={}))
    runner = JsonErrorRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = runner.addresses[0][1]
        async with aiohttp.ClientSession() as http:
            yield Traffic(app, f"http://{host}:{bound}", http)
    finally:
        await runner.cleanup()
        await legacy.stop()
        await vg.stop()


async def _serve_forever(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    async with running_traffic(host, int(port)) as traffic:
        print(f"bridge on {traffic.base_url}, metrics at {traffic.base_url}/metrics")
        await traffic.run_until(asyncio.Event())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8080", help="bridge HOST:PORT")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.listen))


if __name__ == "__main__":
    main()
