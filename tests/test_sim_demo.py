"""The embedded demo: every scenario holds on both paths of the split routes, the shadow
comparisons match except exactly the divergent flow variant's, a reload mid-run moves the
percentage but not the call in flight, and everything the bridge sent the simulated VG endpoint
on the way validates against the official jambonz callback schemas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from io import StringIO
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.app import create_app
from bridge.config import parse_config
from bridge.sim import demo
from bridge.sim.demo import DEMO_TOKEN, demo_config, run_demo
from bridge.sim.scenario import ScenarioResult, load_scenarios, parse_scenario, run_scenario
from bridge.sim.vg_endpoint import VGEndpointSim
from tests.nodepeer import message_problems

SCENARIOS = load_scenarios()
# The shipped refer scenario ends with VAIC's `transferred` hang-up, so the refer actionHook never
# fires; this test-only variant makes the REFER fail so the sip-refer schema is applied too.
REFER_FAILED = parse_scenario(
    {
        "name": "transfer_refer_failed",
        "route": "support",
        "flow": "transfer_refer",
        "caller": "+4915112345678",
        "callee": "+4930111004",
        "steps": [
            {"start": None, "expect": [{"type": "message"}, {"type": "event", "name": "transfer"}]},
            {
                "transfer_status": {"status": "failed", "reasonCode": "busy", "reason": "486"},
                "expect": [
                    {"type": "message", "text": "The transfer did not work."},
                    {
                        "type": "event",
                        "name": "hangup",
                        "activityParams": {"hangupReason": "refer failed"},
                    },
                ],
            },
            {"hangup": None, "expect": []},
        ],
    }
)
# The callback schema of each hook the simulated flows use (bridge/sim/flow.py).
HOOK_SCHEMAS = {"voice": "gather", "dial": "dial", "refer": "sip-refer", "play": "play"}


async def test_run_demo_passes_and_prints_transcripts_and_summary() -> None:
    out = StringIO()
    status = await run_demo(calls=1, out=out)
    text = out.getvalue()
    # on failure, say which check did not hold (the whole report is long)
    assert status == 0, "\n".join(
        line for line in text.splitlines() if "FAIL" in line or line.startswith("demo ")
    )
    assert SCENARIOS, "no scenarios shipped"
    for scenario in SCENARIOS:
        assert f"== {scenario.name}: PASS" in text
    assert "Translations by node:" in text
    assert "Summary:" in text
    summary = text[text.index("Summary:") :]
    for scenario in SCENARIOS:
        assert any(line.split()[:2] == [scenario.name, "PASS"] for line in summary.splitlines()), (
            scenario.name
        )
    assert f"{len(SCENARIOS)}/{len(SCENARIOS)} scenarios held" in text
    assert not [line for line in text.splitlines() if line.startswith("FAIL")]
    assert text.rstrip().endswith("demo held")
    _check_every_transport(text)
    _check_comparisons(text)
    _check_divergent_mismatches(text)
    _check_split_and_reload(text)


WAYS = [
    ("support", "http", "sync"),
    ("support_async", "http+push", "async"),
    ("support", "ws", "sync"),
    ("support_async", "ws", "async"),
]
SPLIT_ROUTES = ("support", "support_async")
RESULTS = ("match", "mismatch", "missing", "extra")


def _section(text: str, heading: str) -> list[str]:
    """The lines after `heading` up to the next blank line."""
    lines = text[text.index(f"\n{heading}") :].splitlines()[2:]
    return lines[: lines.index("")] if "" in lines else lines


def _check_every_transport(text: str) -> None:
    """Each scenario ran over HTTP (sync), HTTP with the push socket (async) and WebSocket mode
    (sync and async), with the same transcript each time; each caller kept its path on a route,
    and each split route served callers on both paths."""
    split = text[text.index("\nSplit routes") : text.index("\nDivergent flow variant")]
    transcripts: dict[str, dict[str, list[str]]] = {}
    paths: dict[tuple[str, str], set[str]] = {}
    for block in split.split("\n== ")[1:]:
        header, *lines = block.strip().splitlines()
        name, _, rest = header.partition(": ")
        rest, _, path = rest.partition(" path=")
        assert path in ("legacy", "voicegateway"), header
        transcripts.setdefault(name, {})[rest] = lines
        route = rest.removeprefix("PASS (route ").split(",")[0]
        paths.setdefault((route, name), set()).add(path)
    summary = text[text.index("Summary:") :].splitlines()
    for scenario in SCENARIOS:
        runs = transcripts[scenario.name]
        assert sorted(runs) == sorted(f"PASS (route {r}, {t}, {m})" for r, t, m in WAYS)
        first = runs["PASS (route support, http, sync)"]
        assert all(lines == first for lines in runs.values()), scenario.name
        for route, transport, mode in WAYS:
            row = [scenario.name, "PASS", route, f"{transport}/{mode}"]
            assert any(line.split()[:4] == row for line in summary), row
    assert all(len(p) == 1 for p in paths.values()), paths  # sticky per caller
    for route in SPLIT_ROUTES:
        seen = set().union(*(p for (r, _), p in paths.items() if r == route))
        assert seen == {"legacy", "voicegateway"}, (route, seen)
    assert f"on all {len(WAYS)} transports/modes" in text


def _comparison_rows(text: str) -> dict[tuple[str, str], dict[str, int]]:
    lines = _section(text, "Shadow comparisons by node")
    assert lines[0].split() == ["route", "node", *RESULTS]
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for line in lines[1:]:
        route, node, *counts = line.split()
        rows[(route, node)] = dict(zip(RESULTS, map(int, counts), strict=True))
    return rows


def _check_comparisons(text: str) -> None:
    """Every shadow comparison on the split routes matched; the divergent route shows exactly
    one mismatch on each changed node."""
    rows = _comparison_rows(text)
    for route in SPLIT_ROUTES:
        nodes = {node: counts for (r, node), counts in rows.items() if r == route}
        assert {"say", "play", "transfer_dial", "hangup"} <= set(nodes), route
        for node, counts in nodes.items():
            assert counts["match"] > 0 and counts["mismatch"] == 0, (route, node, counts)
            assert counts["missing"] == 0 and counts["extra"] == 0, (route, node, counts)
    divergent = {node: c for (r, node), c in rows.items() if r == "support_divergent"}
    assert sum(c["mismatch"] for c in divergent.values()) == 3, divergent
    for node in ("say", "play", "transfer_dial"):
        assert divergent[node]["mismatch"] == 1, (node, divergent)
    assert all(c["missing"] == 0 and c["extra"] == 0 for c in divergent.values()), divergent


def _check_divergent_mismatches(text: str) -> None:
    lines = _section(text, "Divergent mismatches")
    found = {(line.split()[1], line.split()[4], line.split()[6].rstrip(":")) for line in lines}
    assert found == {
        ("greeting", "say", "text"),
        ("play_url", "play", "activityParams.playUrlUrl"),
        ("transfer_dial", "transfer_dial", "activityParams.transferTarget"),
    }, lines
    assert all(line.split()[0] == "support_divergent" for line in lines)
    assert all(line.split()[5] == "mismatch" for line in lines)
    assert "announcement-v2.wav" in "\n".join(lines)
    assert "UNEXPECTED" not in text


def _check_split_and_reload(text: str) -> None:
    rows = [line.split() for line in _section(text, "Routing split")]
    assert rows[0] == ["route", "path", "reason", "calls"]
    calls = {(r[0], r[1]): int(r[3]) for r in rows[1:] if r[2] == "percent"}
    for route in SPLIT_ROUTES:
        assert calls[(route, "legacy")] > 0 and calls[(route, "voicegateway")] > 0, calls
    latency = [line.split()[:2] for line in _section(text, "Latencies by path")]
    for path in ("legacy", "voicegateway"):
        assert [path, "primary"] in latency and [path, "shadow"] in latency, latency
    reload = [line for line in text.splitlines() if line.startswith("Reload: ")]
    assert len(reload) == 1, reload
    assert "voicegateway_percent 50 -> 100" in reload[0]
    assert "after legacy 0, voicegateway" in reload[0]
    assert "the call in flight kept path=legacy" in reload[0]
    assert "0 moved back" in reload[0]
    held = text[text.index("-- config reloaded") :]
    assert held.index("-- config reloaded") < held.index("VAIC → ")  # later steps after it
    assert "was legacy before the reload and legacy at its hang-up" in text


async def test_run_demo_fails_when_the_divergent_variant_shows_other_mismatches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    few = [s for s in SCENARIOS if s.name in ("greeting", "hang_up")]
    monkeypatch.setattr(demo, "load_scenarios", lambda: few)
    monkeypatch.setattr(
        demo, "DIVERGENT_EXPECTED", {"greeting": ("say", "activityParams.userNoInputTimeoutMS")}
    )
    out = StringIO()
    assert await run_demo(calls=1, out=out) == 1
    text = out.getvalue()
    failed = [line for line in text.splitlines() if line.startswith("FAIL")]
    assert any(line.startswith("FAIL  divergent flow variant: 1 mismatches") for line in failed)
    assert text.rstrip().endswith("demo FAILED")


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    buckets = [(0.01, 2.0), (0.1, 4.0), (float("inf"), 4.0)]
    assert demo.histogram_quantile(buckets, 0.5) == pytest.approx(0.01)
    assert demo.histogram_quantile(buckets, 0.75) == pytest.approx(0.055)
    assert demo.histogram_quantile([(0.01, 0.0), (float("inf"), 0.0)], 0.5) is None
    assert demo.histogram_quantile([(0.01, 0.0), (float("inf"), 3.0)], 0.5) == 0.01


@dataclass
class DemoSetup:
    sim: VGEndpointSim
    base_url: str
    http: aiohttp.ClientSession


@pytest.fixture
async def demo_setup() -> AsyncIterator[DemoSetup]:
    """What `run_demo` builds, kept open so the simulator's recordings can be inspected."""
    sim = VGEndpointSim()
    await sim.start()
    app = create_app(parse_config(demo_config(sim.url()), env={}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http = aiohttp.ClientSession()
    try:
        yield DemoSetup(sim, f"http://127.0.0.1:{runner.addresses[0][1]}", http)
    finally:
        await http.close()
        await runner.cleanup()
        await sim.stop()


def _problems(call_sid: str, received: list[dict[str, Any]]) -> list[str]:
    return [f"call {call_sid} {p}" for p in message_problems(received, HOOK_SCHEMAS)]


async def test_every_message_the_bridge_sends_in_the_demo_is_schema_valid(
    demo_setup: DemoSetup,
) -> None:
    results: list[ScenarioResult] = []
    for scenario in [*SCENARIOS, REFER_FAILED]:
        results.append(
            await run_scenario(scenario, demo_setup.base_url, DEMO_TOKEN, session=demo_setup.http)
        )
    failed = [f"{r.name}: {r.failure}" for r in results if not r.passed]
    assert not failed, failed

    sim = demo_setup.sim
    assert sim.stray == []
    assert len(sim.calls) == len(SCENARIOS) + 1
    problems: list[str] = []
    hooks_seen: set[str] = set()
    for call_sid, call in sim.calls.items():
        assert call.received, call_sid
        assert call.received[0]["type"] == "session:new"
        assert {m.get("call_sid") for m in call.received} == {call_sid}
        hooks_seen.update(str(m.get("hook")) for m in call.messages("verb:hook"))
        problems.extend(_problems(call_sid, call.received))
        statuses = [m["data"].get("call_status") for m in call.messages("call:status")]
        assert statuses[-1:] == ["completed"], (call.flow, statuses)
        assert call.received[-1]["type"] == "call:status", (call.flow, call.received_types())
    assert not problems, "\n".join(problems)
    # Every hook kind was exercised, so every callback schema above was applied.
    assert hooks_seen == set(HOOK_SCHEMAS), hooks_seen
