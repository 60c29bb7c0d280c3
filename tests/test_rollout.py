"""Migration plans end to end (design §2.7): a real bridge with its config file, the simulated
legacy endpoint and Voice Gateway app, simulated callers, and an injected clock, so a plan's
hold of minutes passes in a tick.

The healthy flow climbs every step to 100; the divergent flow is held at its step by the
per-node gate; a regression injected at 50 % (a slow first prompt, impatient callers hanging
up) rolls back to 25 with those gates failing; a dry run changes nothing and logs the same
verdicts; force wins over a plan; manual approval and `/admin/plan`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from bridge.app import GatewayKey, create_app
from bridge.config import load_config
from bridge.console import plan as plan_module
from bridge.console.server import ConsoleKey
from bridge.console.steering import audit_path
from bridge.reload import overrides_path, read_overrides
from bridge.rollout import Rollout
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.rollout_traffic import CallTally, caller_numbers, place_calls, support_callee
from bridge.sim.vg_endpoint import VGEndpointSim
from bridge.transport.http_errors import JsonErrorRunner

TOKEN = "rollout-token"
LEGACY_TOKEN = "legacy-token"
ADMIN = "rollout-admin"
ROUTE = "support"
HOLD_S = 600.0
STEPS = [5, 25, 50, 100]


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def gates(min_samples: int = 10) -> dict[str, Any]:
    every = {"min_samples": min_samples}
    return {
        "node_match_rate": every,
        "fallback_rate": {**every, "max": 0.02, "critical": True},
        "ack_timeout_rate": every,
        "upstream_error_rate": {**every, "max": 0.05},
        "turn_latency": every,
        "time_to_first_prompt": {**every, "critical": True, "tolerance_ms": 250},
        "early_hangup_rate": {**every, "critical": True},
        "error_rate": {**every, "critical": True},
    }


def plan(**extra: Any) -> dict[str, Any]:
    return {
        "steps": STEPS,
        "hold": "10m",
        "min_calls": 10,
        "evaluate_every": "1m",
        "gates": gates(),
        **extra,
    }


class Harness:
    """The bridge with one route `support` under a plan, its sims, callers and clock."""

    def __init__(self, app: web.Application, base: str, vg: VGEndpointSim, path: Path) -> None:
        self.app = app
        self.base = base
        self.vg = vg
        self.config_path = path
        self.clock = Clock()
        self.seed = 0
        self.tallies: list[CallTally] = []
        self.http = aiohttp.ClientSession()

    @property
    def rollout(self) -> Rollout:
        return self.app[plan_module.RolloutKey]

    @property
    def migration(self) -> Any:
        return self.app[GatewayKey].config.routes[ROUTE].migration

    def state(self) -> dict[str, Any]:
        return self.rollout.describe(ROUTE)

    async def calls(self, n: int, *, impatient_share: float = 0.5) -> CallTally:
        """`n` new callers; a share of them hang up unless greeted within 0.4 s."""
        self.seed += 1
        callers = caller_numbers(n, seed=self.seed)
        cut = round(n * impatient_share)
        tallies = [
            await place_calls(
                self.base,
                TOKEN,
                ROUTE,
                group,
                callee=support_callee(),
                session=self.http,
                patience_s=patience,
            )
            for group, patience in ((callers[:cut], 0.4), (callers[cut:], None))
            if group
        ]
        for tally in tallies:
            assert tally.errors == 0, tally.failures
        self.tallies.extend(tallies)
        return tallies[0]

    def tick(self, advance_s: float = HOLD_S + 1) -> dict[str, Any]:
        self.clock.now += advance_s
        self.rollout.tick()
        return self.state()

    async def drive(self, *, until: Sequence[str], rounds: int = 40, calls: int = 60) -> None:
        """Calls and ticks until the plan's state is one of `until`."""
        for _ in range(rounds):
            if self.state()["state"] in until:
                return
            await self.calls(calls)
            self.tick()
        raise AssertionError(f"plan never reached {until}: {self.state()}")

    def decisions(self) -> list[tuple[str, float | None, float | None]]:
        return [(e["decision"], e["old"], e["new"]) for e in reversed(self.state()["history"])]

    def audit(self) -> list[dict[str, Any]]:
        path = audit_path(self.config_path)
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@asynccontextmanager
async def harness(
    tmp_path: Path, *, divergent: bool = False, percent: float = 0, **plan_extra: Any
) -> AsyncIterator[Harness]:
    legacy = LegacyEndpointSim(token=LEGACY_TOKEN, divergent=divergent)
    vg = VGEndpointSim()
    await legacy.start()
    await vg.start()
    config_path = tmp_path / "bridge.yaml"
    route = {
        "token": TOKEN,
        "default_region": "DE",
        "turn_settle_ms": 100,
        "voicegateway": {"url": vg.url()},
        "legacy": {"url": legacy.url(), "token": LEGACY_TOKEN},
        "migration": {
            "voicegateway_percent": percent,
            "shadow": True,
            # these calls last under a second: early means before the first prompt here
            "early_hangup_s": 0,
            "plan": plan(**plan_extra),
        },
    }
    config_path.write_text(
        yaml.safe_dump({"listen": "127.0.0.1:0", "admin_token": ADMIN, "routes": {ROUTE: route}}),
        encoding="utf-8",
    )
    plan_module.TICK_S = 3600.0  # the test ticks itself, on its own clock
    app = create_app(load_config(config_path, env={}), config_path=config_path)
    runner = JsonErrorRunner(app, access_log=None)
    h: Harness | None = None
    try:
        h = Harness(app, "", vg, config_path)
        plan_module.rollout_for(app, app[ConsoleKey].audit_for).clock = h.clock
        await runner.setup()  # the plan loop ticks once now, on the test's clock
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        h.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield h
    finally:
        plan_module.TICK_S = 1.0
        if h is not None:
            await h.http.close()
        await runner.cleanup()
        await vg.stop()
        await legacy.stop()


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


async def test_a_healthy_flow_climbs_every_step_to_100(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.drive(until=["complete"])
        assert [(d, new) for d, _, new in h.decisions() if d == "promote"] == [
            ("promote", 5),
            ("promote", 25),
            ("promote", 50),
            ("promote", 100),
        ]
        assert "rollback" not in [d for d, _, _ in h.decisions()]
        assert h.migration.voicegateway_percent == 100
        assert read_overrides(overrides_path(h.config_path))[ROUTE] == {
            "voicegateway_percent": 100.0
        }
        metrics = h.app[GatewayKey].metrics
        assert metrics.rollout_step.labels(ROUTE)._value.get() == 100
        assert metrics.rollout_decisions.labels(ROUTE, "promote")._value.get() == 4
        # every promotion is in the audit log: the plan's verdict with its gates, then the
        # setting it changed, as a person's change would be
        lines = h.audit()
        verdicts = [e for e in lines if e["setting"] == "plan" and e["decision"] == "promote"]
        assert [e["new"] for e in verdicts] == STEPS
        assert all(e["who"] == "plan" for e in lines)
        judged = verdicts[1:]
        assert all(
            {g["name"] for g in e["gates"]} == set(gates()) and e["failed"] == [] for e in judged
        )
        changes = [e["new"] for e in lines if e["setting"] == "voicegateway_percent"]
        assert changes == STEPS
        # the calls really went both ways, and the last judged window had both paths' values
        assert all(t.errors == 0 for t in h.tallies)


async def test_a_divergent_flow_is_held_by_the_per_node_gate(tmp_path: Path) -> None:
    async with harness(tmp_path, divergent=True, on_failure="hold") as h:
        for _ in range(8):
            await h.calls(60)
            state = h.tick()
            if state["verdict"] is not None:
                break
        verdict = state["verdict"]
        assert verdict is not None
        assert verdict["decision"] == "hold"
        assert verdict["failed"] == ["node_match_rate"]
        gate = next(g for g in verdict["gates"] if g["name"] == "node_match_rate")
        assert gate["figure"] < 0.99
        assert gate["node"] in gate["detail"]
        assert gate["nodes"][gate["node"]]["rate"] < 0.99
        # more traffic and time: still held at the first step, nothing moved
        await h.calls(60)
        state = h.tick(120)
        assert state["step"] == 5 and h.migration.voicegateway_percent == 5
        assert h.migration.force is None
        assert {d for d, _, _ in h.decisions()} == {"promote", "hold"}
        assert h.decisions()[0] == ("promote", None, 5)


async def _climb_to_50_then_slow_down(h: Harness) -> dict[str, Any]:
    await h.drive(until=["running"], rounds=1)
    for _ in range(30):
        if h.state()["step"] == 50:
            break
        await h.calls(60)
        h.tick()
    assert h.state()["step"] == 50, h.state()
    h.vg.reply_delay = 0.8  # the regression: the greeting (and every answer) 0.8 s late
    for _ in range(6):
        await h.calls(60)
        state = h.tick()
        if state["verdict"] is not None and state["verdict"]["decision"] == "rollback":
            return state
    raise AssertionError(f"no rollback: {h.state()}")


async def test_a_regression_at_50_rolls_back_to_25_with_the_gates_that_failed(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path) as h:
        state = await _climb_to_50_then_slow_down(h)
        assert state["state"] == "rolled_back"
        assert state["step"] == 25 and h.migration.voicegateway_percent == 25
        failed = set(state["verdict"]["failed"])
        assert {"time_to_first_prompt", "early_hangup_rate"} <= failed
        assert state["verdict"]["reason"].startswith("critical gate failed")
        assert h.decisions()[-1] == ("rollback", 50, 25)
        metrics = h.app[GatewayKey].metrics
        assert metrics.rollout_decisions.labels(ROUTE, "rollback")._value.get() == 1
        # a rolled-back plan does not climb back into what failed
        h.vg.reply_delay = 0.0
        await h.calls(60)
        assert h.tick()["step"] == 25 and h.state()["state"] == "rolled_back"


async def test_a_dry_run_changes_nothing_and_logs_the_same_verdicts(tmp_path: Path) -> None:
    async with harness(tmp_path, percent=50, dry_run=True) as h:
        h.tick(0)
        assert h.state()["step"] == 50  # a person put the route on a step: the plan judges it
        h.vg.reply_delay = 0.8
        for _ in range(6):
            await h.calls(60)
            state = h.tick()
            if state["verdict"] is not None:
                break
        verdict = state["verdict"]
        assert verdict["decision"] == "rollback"
        assert {"time_to_first_prompt", "early_hangup_rate"} <= set(verdict["failed"])
        assert h.migration.voicegateway_percent == 50 and h.migration.force is None
        assert not overrides_path(h.config_path).exists()
        lines = h.audit()
        assert [e["setting"] for e in lines] == ["plan"]
        assert lines[0]["dry_run"] is True and lines[0]["decision"] == "rollback"
        assert (
            h.app[GatewayKey].metrics.rollout_decisions.labels(ROUTE, "rollback")._value.get() == 1
        )


async def test_force_wins_and_the_plan_pauses(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        h.tick(0)
        assert h.migration.voicegateway_percent == 5
        async with h.http.post(
            f"{h.base}/console/api/routes/{ROUTE}/migration",
            json={"force": "legacy"},
            headers=admin(),
        ) as response:
            assert response.status == 200
        await h.calls(60)
        state = h.tick()
        assert state["state"] == "paused" and "force" in state["reason"]
        assert h.migration.voicegateway_percent == 5 and h.migration.force == "legacy"
        async with h.http.post(
            f"{h.base}/console/api/routes/{ROUTE}/migration", json={"force": None}, headers=admin()
        ) as response:
            assert response.status == 200
        state = h.tick(0)
        assert state["state"] == "running" and state["step"] == 5
        assert state["time_on_step_s"] == 0  # a fresh window from the moment force was lifted


async def test_manual_approval_through_the_admin_api(tmp_path: Path) -> None:
    async with harness(tmp_path, approve="manual") as h:
        url = f"{h.base}/admin/plan"
        async with h.http.get(url, params={"route": ROUTE}) as response:
            assert response.status == 401
        async with h.http.post(
            url, params={"route": ROUTE}, json={"action": "approve"}, headers=admin()
        ) as response:
            body = await response.json()
            assert response.status == 409 and body["error"] == "nothing_to_approve"
        await h.drive(until=["awaiting_approval"])
        assert h.migration.voicegateway_percent == 5
        async with h.http.get(url, params={"route": ROUTE}, headers=admin()) as response:
            body = await response.json()
        assert body["state"] == "awaiting_approval" and body["verdict"]["decision"] == "promote"
        for bad, status in (({"action": "jump"}, 400), ([], 400)):
            async with h.http.post(url, params={"route": ROUTE}, json=bad, headers=admin()) as r:
                assert r.status == status and (await r.json())["error"] == "bad_request"
        async with h.http.post(
            url, params={"route": "nope"}, json={"action": "approve"}, headers=admin()
        ) as response:
            assert response.status == 404
        async with h.http.post(
            url, params={"route": ROUTE}, json={"action": "approve"}, headers=admin()
        ) as response:
            body = await response.json()
        assert response.status == 200 and body["step"] == 25 and body["state"] == "running"
        assert h.migration.voicegateway_percent == 25
        assert any(e.get("decision") == "approved" and e["who"] == "admin" for e in h.audit())
        async with h.http.get(url, headers=admin()) as response:
            assert [p["route"] for p in (await response.json())["plans"]] == [ROUTE]


@pytest.mark.parametrize("bad", ["steps", "no_legacy"])
def test_a_plan_that_contradicts_the_route_is_a_config_error(tmp_path: Path, bad: str) -> None:
    from bridge.config import parse_config
    from bridge.errors import ConfigError

    route: dict[str, Any] = {
        "token": TOKEN,
        "voicegateway": {"url": "ws://127.0.0.1:1"},
        "legacy": {"url": "http://127.0.0.1:1"},
        "migration": {"plan": {"steps": [5, 50, 25]}},
    }
    if bad == "no_legacy":
        route["migration"] = {"plan": {"steps": [5, 50]}}
        del route["legacy"]
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump({"routes": {ROUTE: route}}))
    if bad == "steps":
        assert caught.value.path == f"routes.{ROUTE}.migration.plan.steps"
        assert "steps[2] = 25 is not above steps[1] = 50" in caught.value.reason
    else:
        assert caught.value.path == f"routes.{ROUTE}"
        assert "migration.plan needs a legacy upstream" in caught.value.reason


async def test_a_reload_that_changes_the_steps_pauses_the_plan_instead_of_failing(
    tmp_path: Path,
) -> None:
    from bridge.transport.admin import reload_gateway

    async with harness(tmp_path) as h:
        h.tick(0)
        assert h.state()["step"] == 5
        doc = yaml.safe_load(h.config_path.read_text(encoding="utf-8"))
        doc["routes"][ROUTE]["migration"]["plan"]["steps"] = [10, 50, 100]
        h.config_path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        reload_gateway(h.app[GatewayKey])
        state = h.tick()
        assert state["state"] == "paused"
        assert state["reason"] == "voicegateway_percent 5 is not a step of the plan"
        # a person puts the route on one of the new steps: the plan goes on from there
        async with h.http.post(
            f"{h.base}/console/api/routes/{ROUTE}/migration",
            json={"voicegateway_percent": 10},
            headers=admin(),
        ) as response:
            assert response.status == 200
        state = h.tick(0)
        assert (state["state"], state["step"]) == ("running", 10)
