"""The migration console in a real browser: Debian's Chromium, headless, driven by playwright-core
(tests/peers/console_browser.js) against a bridge with the simulators running calls — a split
route with shadow on, and a route whose legacy shadow runs the divergent flows (like the demo).

The script asks for calls over stdio (`CALLS route n`); this test plays them with the simulated
VAIC and answers with the path the bridge counted for each. Set ACVG_CONSOLE_SCREENSHOT to a path
(docs/console.png) to keep the screenshot; otherwise it goes to the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from bridge.app import Gateway, GatewayKey, create_app
from bridge.config import load_config
from bridge.console.server import ConsoleKey
from bridge.sim.demo import DIVERGENT_EXPECTED, demo_callers
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.scenario import Scenario, load_scenarios, run_scenario
from bridge.sim.vg_endpoint import VGEndpointSim
from tests.nodepeer import PEERS_DIR, node_binary

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SCRIPT = PEERS_DIR / "console_browser.js"
ADMIN_TOKEN = "console-admin-token"
ROUTE_TOKEN = "vaic-token"
LEGACY_TOKEN = "legacy-token"
SPLIT, DIVERGENT = "support", "support_divergent"
SCRIPT_TIMEOUT_S = 180.0


def _require_browser() -> str:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: the console's browser test needs Debian's "
            "chromium (`apt-get install -y chromium`; .ci/run installs it)"
        )
    node = node_binary()
    if not (PEERS_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("tests/peers/node_modules/playwright-core is missing: run `make peers`")
    return node


def _config(vg_url: str, legacy_url: str, divergent_url: str) -> dict[str, Any]:
    def route(legacy: str, percent: float) -> dict[str, Any]:
        return {
            "token": ROUTE_TOKEN,
            "default_region": "DE",
            "turn_settle_ms": 150,
            "voicegateway": {"url": vg_url},
            "legacy": {"url": legacy, "token": LEGACY_TOKEN},
            "migration": {"voicegateway_percent": percent, "shadow": True},
        }

    return {
        "listen": "127.0.0.1:0",
        "admin_token": ADMIN_TOKEN,
        "routes": {SPLIT: route(legacy_url, 50), DIVERGENT: route(divergent_url, 100)},
    }


@dataclass
class Stage:
    gateway: Gateway
    url: str
    http: aiohttp.ClientSession
    config_path: Path
    scenarios: list[Scenario]
    placed: int = 0

    def decisions(self) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for family in self.gateway.metrics.routing_decisions.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels["route"], sample.labels["path"])
                    out[key] = out.get(key, 0.0) + sample.value
        return out

    async def call(self, scenario: Scenario, route: str) -> str:
        """Play one call; the path the bridge counted for it."""
        before = self.decisions()
        result = await run_scenario(
            scenario, self.url, ROUTE_TOKEN, session=self.http, route=route, settle=0.05
        )
        assert result.passed, result.render()
        after = self.decisions()
        new = [k for k, v in after.items() if k[0] == route and v > before.get(k, 0.0)]
        assert len(new) == 1, new
        return new[0][1]

    async def fresh_calls(self, route: str, count: int) -> list[str]:
        greeting = next(s for s in self.scenarios if s.name == "greeting")
        paths = []
        for _ in range(count):
            self.placed += 1
            caller = f"+4930555{self.placed:04d}"
            paths.append(await self.call(replace(greeting, caller=caller), route))
        return paths

    async def settle_shadows(self) -> None:
        for _ in range(200):
            active = sum(
                s.value
                for family in self.gateway.metrics.calls_active.collect()
                for s in family.samples
                if s.labels.get("role") == "shadow"
            )
            if active == 0 and self.gateway.divergence.recent(1):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("shadows did not finish")


@pytest.fixture
async def stage(tmp_path: Path) -> AsyncIterator[Stage]:
    vg = VGEndpointSim()
    legacy = LegacyEndpointSim(token=LEGACY_TOKEN)
    divergent = LegacyEndpointSim(token=LEGACY_TOKEN, divergent=True)
    sims: list[VGEndpointSim | LegacyEndpointSim] = [vg, legacy, divergent]
    for sim in sims:
        await sim.start()
    config_path = tmp_path / "bridge.yaml"
    config_path.write_text(
        "# the operator's comments stay\n"
        + yaml.safe_dump(_config(vg.url(), legacy.url(), divergent.url()), sort_keys=False),
        encoding="utf-8",
    )
    app = create_app(load_config(config_path, env={}), config_path=config_path)
    app[ConsoleKey].stream_every_s = 0.2
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    http = aiohttp.ClientSession()
    try:
        yield Stage(
            app[GatewayKey],
            f"http://127.0.0.1:{runner.addresses[0][1]}",
            http,
            config_path,
            demo_callers(load_scenarios()),
        )
    finally:
        await http.close()
        await runner.cleanup()
        for sim in sims:
            await sim.stop()


async def _drive(stage: Stage, node: str, screenshot: Path) -> list[str]:
    return await drive_script(
        stage,
        node,
        SCRIPT,
        ["--screenshot", str(screenshot), "--split-route", SPLIT, "--divergent-route", DIVERGENT],
    )


async def drive_script(stage: Stage, node: str, script: Path, args: list[str]) -> list[str]:
    """Run a console script (`--url` and `--token` given, then `args`) to its end, placing the
    calls it asks for; its stdout lines. Fails the test when it exits non-zero."""
    process = await asyncio.create_subprocess_exec(
        node,
        str(script),
        "--url",
        stage.url,
        "--token",
        ADMIN_TOKEN,
        *args,
        cwd=PEERS_DIR,
        env={**os.environ, "CHROMIUM": str(CHROMIUM)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdin is not None
    lines: list[str] = []
    stderr_task = asyncio.ensure_future(process.stderr.read()) if process.stderr else None
    try:
        async with asyncio.timeout(SCRIPT_TIMEOUT_S):
            while raw := await process.stdout.readline():
                line = raw.decode().rstrip("\n")
                lines.append(line)
                if line.startswith("CALLS "):
                    _, route, count = line.split()
                    paths = await stage.fresh_calls(route, int(count))
                    process.stdin.write(f"PATHS {','.join(paths)}\n".encode())
                    await process.stdin.drain()
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    errors = (await stderr_task).decode() if stderr_task else ""
    assert code == 0, f"{script.name} failed after {lines[-1:]}:\n{errors}"
    return lines


def _screenshot_path(tmp_path: Path) -> Path:
    wanted = os.environ.get("ACVG_CONSOLE_SCREENSHOT")
    return Path(wanted).resolve() if wanted else tmp_path / "console.png"


async def test_console_in_chromium(stage: Stage, tmp_path: Path) -> None:
    node = _require_browser()
    # Calls on both paths of the split route, and the divergent flows behind a voicegateway primary.
    split_paths = {await stage.call(s, SPLIT) for s in stage.scenarios[:8]}
    assert split_paths == {"legacy", "voicegateway"}
    by_name = {s.name: s for s in stage.scenarios}
    for name in DIVERGENT_EXPECTED:
        assert await stage.call(by_name[name], DIVERGENT) == "voicegateway"
    await stage.settle_shadows()

    screenshot = _screenshot_path(tmp_path)
    lines = await _drive(stage, node, screenshot)

    assert lines[-1] == "OK"
    assert screenshot.stat().st_size > 10_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # What the page did is on disk: the override file (the operator's file untouched) and audit.
    overrides = yaml.safe_load((stage.config_path.parent / "bridge.overrides.yaml").read_text())
    assert overrides == {
        "routes": {SPLIT: {"migration": {"voicegateway_percent": 100.0, "force": None}}}
    }
    assert stage.config_path.read_text().startswith("# the operator's comments stay\n")
    audit = [
        json.loads(line)
        for line in (stage.config_path.parent / "bridge.audit.jsonl").read_text().splitlines()
    ]
    assert [(a["who"], a["route"], a["setting"], a["old"], a["new"]) for a in audit] == [
        ("admin", SPLIT, "voicegateway_percent", 50.0, 0.0),
        ("admin", SPLIT, "voicegateway_percent", 0.0, 100.0),
        ("admin", SPLIT, "force", None, "legacy"),
        ("admin", SPLIT, "force", "legacy", None),
    ]
    # A restart keeps what the console changed.
    restarted = create_app(load_config(stage.config_path, env={}), config_path=stage.config_path)
    migration = restarted[GatewayKey].config.routes[SPLIT].migration
    assert (migration.voicegateway_percent, migration.force) == (100.0, None)
