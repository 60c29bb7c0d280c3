"""The console's migration plans in a real browser (tests/peers/console_plan_browser.js, headless
Chromium like tests/test_console_browser.py, whose stage and script driver it reuses) against a
bridge with three planned routes:

- `manual`: `approve: manual`, steps 5 → 50 → 100, no hold, one voicegateway call, a gate that
  passes; the page shows it awaiting approval, Approve promotes it to 50 %;
- `broken`: its voicegateway upstream refuses connections, so the call falls back and the
  critical `fallback_rate` gate fails: the plan rolls back (force legacy at its first step); the
  page shows the failed gate, Resume lifts the plan's force;
- `rehearsal`: a dry run, marked as one, on a step it only imagines.

A rule sends the test's callers to voicegateway, so one call is enough on a 5 % step. The plan
loop ticks every `TICK_S`, lowered here. ACVG_CONSOLE_PLAN_SCREENSHOT keeps the screenshot.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from bridge.app import GatewayKey, create_app
from bridge.config import load_config
from bridge.console import plan as console_plan
from bridge.console.plan import RolloutKey
from bridge.console.server import ConsoleKey
from bridge.rollout import Rollout
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.scenario import load_scenarios
from bridge.sim.vg_endpoint import VGEndpointSim
from tests.nodepeer import PEERS_DIR
from tests.test_console_browser import (
    ADMIN_TOKEN,
    LEGACY_TOKEN,
    ROUTE_TOKEN,
    Stage,
    _require_browser,
    drive_script,
)

SCRIPT = PEERS_DIR / "console_plan_browser.js"
MANUAL, BROKEN, REHEARSAL = "manual", "broken", "rehearsal"
CALLERS = "+4930555"  # Stage.fresh_calls' callers; the rule sends them to voicegateway
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class PlanStage(Stage):
    app: web.Application | None = None

    @property
    def rollout(self) -> Rollout:
        assert self.app is not None
        return self.app[RolloutKey]

    def plan(self, route: str) -> str:
        """The state of the route's plan, as the plan loop left it."""
        return self.rollout.plans[route].state


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _config(vg_url: str, legacy_url: str, dead_vg_url: str) -> dict[str, Any]:
    def route(vg: str, migration: dict[str, Any]) -> dict[str, Any]:
        return {
            "token": ROUTE_TOKEN,
            "default_region": "DE",
            "turn_settle_ms": 150,
            "voicegateway": {"url": vg},
            "legacy": {"url": legacy_url, "token": LEGACY_TOKEN},
            "migration": migration,
        }

    to_vg = [{"match": {"caller_prefix": [CALLERS]}, "path": "voicegateway"}]
    return {
        "listen": "127.0.0.1:0",
        "admin_token": ADMIN_TOKEN,
        "routes": {
            MANUAL: route(
                vg_url,
                {
                    "voicegateway_percent": 5,
                    "rules": to_vg,
                    "plan": {
                        "steps": [5, 50, 100],
                        "hold": 0,
                        "min_calls": 1,
                        "approve": "manual",
                        "gates": {"fallback_rate": {"max": 1, "min_samples": 1}},
                    },
                },
            ),
            BROKEN: route(
                dead_vg_url,
                {
                    "voicegateway_percent": 5,
                    "rules": to_vg,
                    "plan": {
                        "steps": [5, 100],
                        "hold": 0,
                        "min_calls": 1,
                        "gates": {"fallback_rate": {"max": 0, "min_samples": 1, "critical": True}},
                    },
                },
            ),
            REHEARSAL: route(
                vg_url, {"voicegateway_percent": 0, "plan": {"steps": [10, 100], "dry_run": True}}
            ),
        },
    }


async def _until(what: str, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PlanStage]:
    monkeypatch.setattr(console_plan, "TICK_S", 0.05)
    vg = VGEndpointSim()
    legacy = LegacyEndpointSim(token=LEGACY_TOKEN)
    for sim in (vg, legacy):
        await sim.start()
    config_path = tmp_path / "bridge.yaml"
    doc = _config(vg.url(), legacy.url(), f"ws://127.0.0.1:{_closed_port()}/vg")
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    app = create_app(load_config(config_path, env={}), config_path=config_path)
    app[ConsoleKey].stream_every_s = 0.2
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    http = aiohttp.ClientSession()
    try:
        # The plans' windows open at their first tick: calls before it would not count.
        await _until(
            "the plans started", lambda: RolloutKey in app and len(app[RolloutKey].plans) == 3
        )
        yield PlanStage(
            app[GatewayKey],
            f"http://127.0.0.1:{runner.addresses[0][1]}",
            http,
            config_path,
            load_scenarios(),
            app=app,
        )
    finally:
        await http.close()
        await runner.cleanup()
        for sim in (vg, legacy):
            await sim.stop()


def _screenshot_path(tmp_path: Path) -> Path:
    wanted = os.environ.get("ACVG_CONSOLE_PLAN_SCREENSHOT")
    return Path(wanted).resolve() if wanted else tmp_path / "console-plans.png"


async def _get(stage: PlanStage, path: str) -> Any:
    async with stage.http.get(stage.url + path, headers=ADMIN) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_plans_in_chromium(stage: PlanStage, tmp_path: Path) -> None:
    node = _require_browser()
    assert await stage.fresh_calls(MANUAL, 1) == ["voicegateway"]
    assert await stage.fresh_calls(BROKEN, 1) == ["legacy"]  # voicegateway refused: a fallback
    await _until("manual awaits approval", lambda: stage.plan(MANUAL) == "awaiting_approval")
    await _until("broken rolled back", lambda: stage.plan(BROKEN) == "rolled_back")

    screenshot = _screenshot_path(tmp_path)
    lines = await drive_script(
        stage,
        node,
        SCRIPT,
        [
            "--screenshot",
            str(screenshot),
            "--manual-route",
            MANUAL,
            "--broken-route",
            BROKEN,
            "--dry-route",
            REHEARSAL,
        ],
    )
    assert lines[-1] == "OK"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Approve moved the route to the next step; Resume lifted the plan's kill switch.
    routes = (await _get(stage, "/admin/routes"))["routes"]
    assert routes[MANUAL]["migration"]["voicegateway_percent"] == 50.0
    assert routes[BROKEN]["migration"]["force"] is None
    assert routes[REHEARSAL]["migration"]["voicegateway_percent"] == 0.0  # a dry run moves nothing
    manual = await _get(stage, f"/admin/plan?route={MANUAL}")
    assert (manual["state"], manual["step"], manual["step_index"]) == ("running", 50.0, 1)
    assert [(h["decision"], h["old"], h["new"]) for h in manual["history"]] == [
        ("approved", 5.0, 50.0),
        ("promote", 5.0, 50.0),
    ]
    broken = await _get(stage, f"/admin/plan?route={BROKEN}")
    assert (broken["state"], broken["step"], broken["force"]) == ("running", 5.0, None)
    assert [h["decision"] for h in broken["history"]] == ["resumed", "rollback"]
    assert broken["history"][1]["failed"] == ["fallback_rate"]

    # Every change is in the audit log: the plan's verdicts and steering, the admin's actions.
    audit = [
        json.loads(line)
        for line in (stage.config_path.parent / "bridge.audit.jsonl").read_text().splitlines()
    ]

    def changes(route: str) -> list[tuple[Any, ...]]:
        return [
            (a["who"], a["setting"], a.get("decision"), a["old"], a["new"])
            for a in audit
            if a["route"] == route
        ]

    assert changes(MANUAL) == [
        ("plan", "plan", "promote", 5.0, 50.0),
        ("plan", "voicegateway_percent", None, 5.0, 50.0),
        ("admin", "plan", "approved", 5.0, 50.0),
    ]
    assert changes(BROKEN) == [
        ("plan", "plan", "rollback", 5.0, 0.0),
        ("plan", "force", None, None, "legacy"),
        ("plan", "force", None, "legacy", None),
        ("admin", "plan", "resumed", 5.0, 5.0),
    ]
    assert changes(REHEARSAL) == [("plan", "plan", "promote", None, 10.0)]
