"""The console's HTTP side over real HTTP: auth, the page, data shapes, the stream, steering."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from bridge.app import Gateway, GatewayKey, create_app
from bridge.compare import ActivityComparison, ComparisonResult, DiffKind, FieldDiff, TurnComparison
from bridge.config import load_config
from bridge.console.server import ConsoleKey

ADMIN = {"Authorization": "Bearer admin-tok"}
DATA_ENDPOINTS = [
    ("GET", "/console/api/state"),
    ("GET", "/console/api/divergences"),
    ("GET", "/console/api/stream"),
    ("POST", "/console/api/routes/r/migration"),
]


def _doc(**top: Any) -> dict[str, Any]:
    both = {
        "token": "r-tok",
        "voicegateway": {"url": "ws://127.0.0.1:9/vg"},
        "legacy": {"url": "http://127.0.0.1:9/legacy", "token": "legacy-tok"},
        "migration": {"voicegateway_percent": 10, "shadow": True},
    }
    legacy_only = {"token": "l-tok", "legacy": {"url": "http://127.0.0.1:9/old"}}
    return {
        "admin_token": "admin-tok",
        "console": {"min_samples": 4, "ready_match_rate": 0.9, "review_match_rate": 0.5},
        "routes": {"r": both, "old": legacy_only},
        **top,
    }


@dataclass
class Bridge:
    app: web.Application
    url: str
    http: aiohttp.ClientSession
    file: Path

    @property
    def gateway(self) -> Gateway:
        return self.app[GatewayKey]

    @property
    def overrides(self) -> Path:
        return self.file.with_name("bridge.overrides.yaml")

    @property
    def audit(self) -> Path:
        return self.file.with_name("bridge.audit.jsonl")

    async def call(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, Any]:
        data = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
        async with self.http.request(method, self.url + path, headers=headers, data=data) as resp:
            return resp.status, await resp.json()

    async def steer(self, route: str, body: Any) -> tuple[int, Any]:
        return await self.call("POST", f"/console/api/routes/{route}/migration", ADMIN, body)

    def rejected(self, reason: str) -> float:
        value = self.gateway.metrics.registry.get_sample_value(
            "acvg_rejected_requests_total", {"route": "_admin", "reason": reason}
        )
        return value or 0.0


Factory = Callable[..., Awaitable[Bridge]]


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Factory]:
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(doc: dict[str, Any] | None = None, *, with_path: bool = True) -> Bridge:
        file = tmp_path / "bridge.yaml"
        file.write_text(
            "# operator comment\n" + yaml.safe_dump(doc or _doc(), sort_keys=False),
            encoding="utf-8",
        )
        app = create_app(load_config(file), config_path=file if with_path else None)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Bridge(app, f"http://127.0.0.1:{runner.addresses[0][1]}", http, file)

    yield start
    for http in sessions:
        await http.close()
    for runner in runners:
        await runner.cleanup()


# ---------------------------------------------------------------- auth and the page


@pytest.mark.parametrize(
    "headers", [None, {"Authorization": "Bearer wrong"}, {"Authorization": "admin-tok"}]
)
async def test_data_endpoints_need_the_admin_token(
    bridge: Factory, headers: dict[str, str] | None
) -> None:
    b = await bridge()
    for method, path in DATA_ENDPOINTS:
        status, body = await b.call(method, path, headers, {"voicegateway_percent": 1})
        assert (status, body["error"]) == (401, "auth"), path
    assert b.rejected("auth") == len(DATA_ENDPOINTS)
    assert b.gateway.config.routes["r"].migration.voicegateway_percent == 10
    assert not b.overrides.exists()


async def test_without_an_admin_token_in_the_config_the_console_is_off(bridge: Factory) -> None:
    doc = _doc()
    del doc["admin_token"]
    b = await bridge(doc)
    for method, path in DATA_ENDPOINTS:
        status, body = await b.call(method, path, ADMIN, {})
        assert (status, body["error"]) == (403, "admin_disabled"), path


async def test_the_page_shell_loads_without_token_and_holds_no_data(bridge: Factory) -> None:
    b = await bridge()
    async with b.http.get(b.url + "/console") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        html = await resp.text()
    assert 'id="login-form"' in html
    assert "support" not in html and "r-tok" not in html and "admin-tok" not in html
    assert "http://" not in html.replace('xmlns="http://', "")  # no CDN
    async with b.http.get(b.url + "/console/static/console.js") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/javascript")
        script = await resp.text()
    assert "sessionStorage" in script and "Authorization" in script
    assert "EventSource" not in script.replace("because EventSource", "")
    async with b.http.get(b.url + "/console/static/..%2Fserver.py") as resp:
        assert resp.status == 404
    async with b.http.get(b.url + "/console/static/nothing.js") as resp:
        assert resp.status == 404


# ---------------------------------------------------------------- data


async def test_state_shape_policy_split_and_thresholds(bridge: Factory) -> None:
    b = await bridge()
    metrics = b.gateway.metrics
    metrics.calls_started.labels("r", "legacy", "primary").inc(3)
    metrics.calls_started.labels("r", "voicegateway", "primary").inc(2)
    metrics.calls_started.labels("r", "legacy", "shadow").inc(2)
    metrics.calls_active.labels("r", "voicegateway", "primary").inc()
    metrics.routing_decisions.labels("r", "legacy", "percent").inc(2)
    metrics.routing_decisions.labels("r", "legacy", "fallback").inc(1)
    metrics.routing_decisions.labels("r", "voicegateway", "percent").inc(2)
    metrics.call_outcomes.labels("r", "voicegateway", "bot_hangup").inc(2)
    metrics.no_input_events.labels("r", "voicegateway").inc(1)
    status, state = await b.call("GET", "/console/api/state", ADMIN)
    assert status == 200
    assert state["thresholds"] == {
        "min_samples": 4,
        "ready_match_rate": 0.9,
        "review_match_rate": 0.5,
    }
    assert state["steerable"] is True and state["draining"] is False
    assert [r["name"] for r in state["routes"]] == ["r", "old"]
    r = state["routes"][0]
    assert r["paths"] == ["legacy", "voicegateway"]
    assert r["migration"]["voicegateway_percent"] == 10 and r["migration"]["force"] is None
    assert r["split"]["legacy"] == {
        "calls": 3,
        "active": 0,
        "shadow_calls": 2,
        "shadow_active": 0,
        "reasons": {"fallback": 1, "percent": 2},
    }
    assert r["split"]["voicegateway"]["active"] == 1
    assert r["fallbacks"] == 1
    assert r["readiness"]["total"]["verdict"] == "not enough data"
    assert r["readiness"]["nodes"] == []
    assert r["latency"]["legacy"] == {"turns": 0, "p50_s": None, "p95_s": None}
    # the voice KPIs per path (their figures: tests/test_console_view.py)
    vg_kpis, legacy_kpis = r["kpis"]["voicegateway"], r["kpis"]["legacy"]
    assert vg_kpis["calls_ended"] == 2 and vg_kpis["no_input_per_call"] == 0.5
    assert vg_kpis["outcomes"]["bot_hangup"] == {"count": 2, "share": 1.0}
    assert vg_kpis["first_prompt"] == {"calls": 0, "p50_s": None, "p95_s": None}
    assert legacy_kpis["calls_ended"] == 0 and legacy_kpis["turns_per_call"] is None
    assert state["history"]["step_s"] == 60 and state["history"]["samples"]
    assert state["audit"] == []
    text = json.dumps(state)
    assert "tok" not in text and "127.0.0.1:9" not in text


# The keys of a plan's state the console page reads (bridge/rollout.py `Rollout.describe`).
PLAN_KEYS = {
    "route", "plan", "state", "reason", "step", "step_index", "voicegateway_percent", "force",
    "since", "time_on_step_s", "next_evaluation", "voicegateway_calls", "verdict", "history",
}  # fmt: skip


async def test_state_lists_each_plan_as_admin_plan_describes_it(bridge: Factory) -> None:
    b = await bridge()
    status, state = await b.call("GET", "/console/api/state", ADMIN)
    assert status == 200 and state["plans"] == []  # no route has a plan
    doc = _doc()
    plan = {"steps": [10, 50, 100], "hold": "10m", "min_calls": 5, "approve": "manual"}
    doc["routes"]["r"]["migration"]["plan"] = plan
    b = await bridge(doc)
    status, state = await b.call("GET", "/console/api/state", ADMIN)
    assert status == 200
    [shown] = state["plans"]  # the route without a plan is not listed
    assert set(shown) >= PLAN_KEYS  # what the page reads
    status, described = await b.call("GET", "/admin/plan?route=r", ADMIN)
    assert status == 200
    moving = {"time_on_step_s", "reason"}  # "waiting: hold N s more" counts down
    assert {k: v for k, v in shown.items() if k not in moving} == {
        k: v for k, v in described.items() if k not in moving
    }
    assert shown["route"] == "r" and shown["state"] == "running"
    assert (shown["step"], shown["step_index"], shown["voicegateway_percent"]) == (10.0, 0, 10.0)
    assert shown["plan"]["steps"] == [10.0, 50.0, 100.0] and shown["plan"]["hold"] == 600.0
    assert shown["plan"]["approve"] == "manual" and shown["plan"]["dry_run"] is False
    assert "node_match_rate" in shown["plan"]["gates"]  # the defaults, shadow being on
    assert shown["verdict"] is None and shown["history"] == []


async def test_readiness_verdicts_and_latency_from_the_metrics(bridge: Factory) -> None:
    b = await bridge()
    comparisons = b.gateway.metrics.shadow_comparisons
    comparisons.labels("r", "say", "match").inc(10)  # ready: 100 % over 10
    comparisons.labels("r", "play", "match").inc(3)
    comparisons.labels("r", "play", "mismatch").inc(1)  # 75 %: needs review (above 50 %)
    comparisons.labels("r", "hangup", "match").inc(1)
    comparisons.labels("r", "hangup", "missing").inc(2)
    comparisons.labels("r", "hangup", "extra").inc(1)  # 25 %: needs review, flagged bad
    comparisons.labels("r", "dtmf", "match").inc(3)  # 3 < min_samples
    for seconds in (0.004, 0.004, 0.004, 0.2):
        b.gateway.metrics.turn_duration.labels("r", "voicegateway", "primary").observe(seconds)
    b.gateway.metrics.turn_duration.labels("r", "voicegateway", "shadow").observe(0.004)
    _, state = await b.call("GET", "/console/api/state", ADMIN)
    r = state["routes"][0]
    rows = {row["node"]: row for row in r["readiness"]["nodes"]}
    assert [row["node"] for row in r["readiness"]["nodes"]] == ["dtmf", "hangup", "play", "say"]
    assert (rows["say"]["verdict"], rows["say"]["level"], rows["say"]["samples"]) == (
        "ready",
        "ok",
        10,
    )
    assert (rows["play"]["verdict"], rows["play"]["level"]) == ("needs review", "warn")
    assert rows["play"]["match_rate"] == 0.75 and rows["play"]["mismatch"] == 1
    assert (rows["hangup"]["verdict"], rows["hangup"]["level"]) == ("needs review", "bad")
    assert (rows["hangup"]["missing"], rows["hangup"]["extra"]) == (2, 1)
    assert rows["dtmf"]["verdict"] == "not enough data"
    total = r["readiness"]["total"]
    assert (total["samples"], total["match"]) == (21, 17)
    assert total["verdict"] == "needs review"
    vg = r["latency"]["voicegateway"]
    assert vg["turns"] == 5
    assert 0.002 <= vg["p50_s"] <= 0.005
    assert 0.1 <= vg["p95_s"] <= 0.25


def _divergent_turn(text_a: str, text_b: str) -> TurnComparison:
    primary = {"type": "message", "text": text_a}
    shadow = {"type": "message", "text": text_b}
    hangup = {"type": "event", "name": "hangup"}
    return TurnComparison(
        items=(
            ActivityComparison(
                "say",
                ComparisonResult.MISMATCH,
                ("text",),
                primary,
                shadow,
                (FieldDiff("text", DiffKind.VALUE),),
            ),
            ActivityComparison("hangup", ComparisonResult.MATCH, (), hangup, hangup),
            ActivityComparison("hangup", ComparisonResult.EXTRA, (), None, hangup),
        ),
        order_matches=True,
        primary_path="voicegateway",
    )


async def test_divergences_are_redacted_filtered_and_limited(bridge: Factory) -> None:
    b = await bridge()
    b.gateway.divergence.record("r", "c1", 1, _divergent_turn("Call +4930123456", "Call us"))
    b.gateway.divergence.record("old", "c2", 2, _divergent_turn("a", "b"))
    status, body = await b.call("GET", "/console/api/divergences", ADMIN)
    assert status == 200
    items = body["divergences"]
    assert [(i["route"], i["node"], i["result"]) for i in items] == [
        ("old", "say", "mismatch"),
        ("old", "hangup", "extra"),
        ("r", "say", "mismatch"),
        ("r", "hangup", "extra"),
    ]
    say = items[2]
    assert say["fields"] == ["text"] and say["field_kinds"] == {"text": "value"}
    assert (say["primary_path"], say["shadow_path"]) == ("voicegateway", "legacy")
    assert "4930123456" not in json.dumps(say) and "<redacted>" in say["primary"]["text"]
    assert say["shadow"] == {"type": "message", "text": "Call us"}
    _, body = await b.call("GET", "/console/api/divergences?route=r&node=hangup", ADMIN)
    assert [(i["route"], i["node"]) for i in body["divergences"]] == [("r", "hangup")]
    assert body["divergences"][0]["primary"] is None
    _, body = await b.call("GET", "/console/api/divergences?limit=1", ADMIN)
    assert len(body["divergences"]) == 1
    for query, message in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("limit=501", "limit"),
        ("route=nope", "no route"),
    ]:
        status, body = await b.call("GET", f"/console/api/divergences?{query}", ADMIN)
        assert status == 400 and message in body["message"], query


async def test_the_stream_sends_state_and_divergences_as_server_sent_events(
    bridge: Factory,
) -> None:
    b = await bridge()
    b.app[ConsoleKey].stream_every_s = 0.05
    b.gateway.divergence.record("r", "c1", 1, _divergent_turn("a", "b"))
    events: list[tuple[str, Any]] = []
    recorded = False
    async with b.http.get(b.url + "/console/api/stream", headers=ADMIN) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        buffer = b""
        async with asyncio.timeout(10):
            while [name for name, _ in events].count("divergences") < 2:
                buffer += await resp.content.readany()
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    lines = dict(line.split(": ", 1) for line in block.decode().split("\n"))
                    events.append((lines["event"], json.loads(lines["data"])))
                if not recorded and [name for name, _ in events].count("state") >= 2:
                    # A new divergence goes out on the next tick; ticks without one send none.
                    recorded = True
                    b.gateway.divergence.record("old", "c2", 1, _divergent_turn("c", "d"))
    names = [name for name, _ in events]
    assert names[:2] == ["state", "divergences"]
    assert names.count("divergences") == 2
    first, second = [body["divergences"] for name, body in events if name == "divergences"]
    assert [i["route"] for i in first] == ["r", "r"]
    assert [i["route"] for i in second][:2] == ["old", "old"]
    state = events[0][1]
    assert {"routes", "thresholds", "history", "audit"} <= set(state)


# ---------------------------------------------------------------- steering


async def test_steering_writes_the_override_file_audits_and_reloads(bridge: Factory) -> None:
    b = await bridge()
    original = b.file.read_text()
    status, body = await b.steer("r", {"voicegateway_percent": 75})
    assert status == 200, body
    assert body["old"] == {"voicegateway_percent": 10.0, "force": None}
    assert body["new"] == {"voicegateway_percent": 75.0, "force": None}
    assert b.gateway.config.routes["r"].migration.voicegateway_percent == 75
    assert b.file.read_text() == original  # the operator's file (and its comments) untouched
    assert yaml.safe_load(b.overrides.read_text()) == {
        "routes": {"r": {"migration": {"voicegateway_percent": 75.0}}}
    }
    assert b.overrides.read_text().startswith("# Written by the acvg-bridge migration console")
    _, routes = await b.call("GET", "/admin/routes", ADMIN)
    assert routes["routes"]["r"]["migration"]["voicegateway_percent"] == 75

    status, body = await b.steer("r", {"force": "legacy"})
    assert status == 200 and body["new"]["force"] == "legacy"
    status, body = await b.steer("r", {"force": None, "voicegateway_percent": 20})
    assert status == 200 and body["new"] == {"voicegateway_percent": 20.0, "force": None}

    audit = [json.loads(line) for line in b.audit.read_text().splitlines()]
    assert [(a["who"], a["route"], a["setting"], a["old"], a["new"]) for a in audit] == [
        ("admin", "r", "voicegateway_percent", 10.0, 75.0),
        ("admin", "r", "force", None, "legacy"),
        ("admin", "r", "voicegateway_percent", 75.0, 20.0),
        ("admin", "r", "force", "legacy", None),
    ]
    assert all(a["time"].endswith("Z") for a in audit)
    _, state = await b.call("GET", "/console/api/state", ADMIN)
    assert [a["setting"] for a in state["audit"]][:2] == ["force", "voicegateway_percent"]

    # A restart keeps it: the override file goes over the config file at startup.
    again = await bridge(None)
    assert again.file == b.file
    migration = again.gateway.config.routes["r"].migration
    assert (migration.voicegateway_percent, migration.force) == (20.0, None)
    assert len(again.app[ConsoleKey].audit_for(again.gateway).recent()) == 4


async def test_a_reload_keeps_the_overrides(bridge: Factory) -> None:
    b = await bridge()
    assert (await b.steer("r", {"voicegateway_percent": 60}))[0] == 200
    status, _ = await b.call("POST", "/admin/reload", ADMIN)
    assert status == 200
    assert b.gateway.config.routes["r"].migration.voicegateway_percent == 60


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"voicegateway_percent": 150}, "voicegateway_percent: must be a number from 0 to 100"),
        ({"voicegateway_percent": -1}, "from 0 to 100, got -1"),
        ({"voicegateway_percent": "50"}, 'got "50"'),
        ({"voicegateway_percent": True}, "got true"),
        ({"voicegateway_percent": None}, "got null"),
        ({"force": "sideways"}, 'force: must be "legacy", "voicegateway" or null'),
        ({"shadow": False}, "shadow: cannot be changed here"),
        ({}, "send a JSON object"),
        ([50], "send a JSON object"),
        ("{not json", "the body is not JSON"),
    ],
)
async def test_invalid_changes_answer_400_and_change_nothing(
    bridge: Factory, body: Any, message: str
) -> None:
    b = await bridge()
    status, answer = await b.steer("r", body)
    assert status == 400
    assert message in answer["message"]
    assert b.gateway.config.routes["r"].migration.voicegateway_percent == 10
    assert not b.overrides.exists() and not b.audit.exists()


async def test_a_change_the_route_cannot_take_is_refused(bridge: Factory) -> None:
    b = await bridge()
    status, body = await b.steer("old", {"force": "voicegateway"})
    assert (status, body["error"]) == (400, "invalid_change")
    assert "no voicegateway" in body["message"]
    status, body = await b.steer("nope", {"force": "legacy"})
    assert (status, body["error"]) == (404, "not_found")
    assert not b.overrides.exists()


async def test_a_broken_config_file_refuses_the_change_and_restores_the_overrides(
    bridge: Factory,
) -> None:
    b = await bridge()
    assert (await b.steer("r", {"voicegateway_percent": 30}))[0] == 200
    before = b.overrides.read_text()
    b.file.write_text("routes: {r: {token: x, surprise: 1}}\n")
    status, body = await b.steer("r", {"voicegateway_percent": 90})
    assert (status, body["error"]) == (400, "invalid_config")
    assert "bridge.yaml" in body["message"] and "unknown key" in body["message"]
    assert b.overrides.read_text() == before
    assert b.gateway.config.routes["r"].migration.voicegateway_percent == 30


async def test_without_a_config_file_steering_is_off(bridge: Factory) -> None:
    b = await bridge(with_path=False)
    status, body = await b.steer("r", {"voicegateway_percent": 30})
    assert (status, body["error"]) == (409, "no_config_file")
    _, state = await b.call("GET", "/console/api/state", ADMIN)
    assert state["steerable"] is False
