"""bridge/recording.py through a real bridge: a route with `record` writes each sampled call to
its journal (sync and async mode), valid against docs/journal.schema.json and without the
caller's number; a journal that cannot be opened costs the call nothing but a counted drop."""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bridge.config import parse_config
from bridge.sim.scenario import step_activity
from bridge.sim.vaic import stamp
from bridge.sim.vg_endpoint import VGEndpointSim
from tests.conftest import BridgeFactory, RunningBridge
from tests.test_legacy_path import SCENARIOS

SCENARIO = SCENARIOS["spoken_answer"]
AUTH = {"Authorization": "Bearer tok"}
SCHEMA = json.loads((Path(__file__).parent.parent / "docs/journal.schema.json").read_text())


@pytest.fixture
async def vg_sim() -> AsyncIterator[VGEndpointSim]:
    async with VGEndpointSim() as sim:
        yield sim


async def _bridge(
    bridge_factory: BridgeFactory, vg: VGEndpointSim, journal: Path, **route: Any
) -> RunningBridge:
    body = {
        "token": "tok",
        "turn_settle_ms": 100,
        "voicegateway": {"url": vg.url()},
        "record": {"path": str(journal), "sample_rate": 1.0},
        **route,
    }
    return await bridge_factory(parse_config(yaml.safe_dump({"routes": {"r": body}}), env={}))


async def _call(bridge: RunningBridge, turns: int) -> str:
    conversation = str(uuid.uuid4())
    http, base = bridge.http, f"{bridge.url}/ac/r"
    async with http.post(base, json={"conversation": conversation}, headers=AUTH) as reply:
        assert reply.status == 200
    for turn in range(turns):
        activity = step_activity(SCENARIO.steps[min(turn, 1)], SCENARIO, conversation)
        body = {"activities": [stamp(activity, datetime.now(UTC))]}
        url = f"{base}/conversation/{conversation}/activities"
        async with http.post(url, json=body, headers=AUTH) as reply:
            assert reply.status == 200
        await asyncio.sleep(0.3)  # async mode: the turn's pushed outputs come meanwhile
    url = f"{base}/conversation/{conversation}/disconnect"
    ended = {"reasonCode": "client-disconnected", "reason": "caller hung up"}
    async with http.post(url, json=ended, headers=AUTH) as reply:
        assert reply.status == 200
    return conversation


def _read(journal: Path) -> list[dict[str, Any]]:
    text = journal.read_text() if journal.exists() else ""
    return [json.loads(line) for line in text.splitlines()]


async def _lines(journal: Path, count: int) -> list[dict[str, Any]]:
    for _ in range(100):  # the writer works in the background
        if len(_read(journal)) >= count:
            break
        await asyncio.sleep(0.05)
    return _read(journal)


@pytest.mark.parametrize("async_mode", [False, True])
async def test_a_recorded_route_journals_each_call(
    async_mode: bool, tmp_path: Path, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    journal = tmp_path / "calls.jsonl"
    bridge = await _bridge(bridge_factory, vg_sim, journal, async_mode=async_mode)
    await _call(bridge, 3)
    [line] = await _lines(journal, 1)
    jsonschema.validate(line, SCHEMA)
    assert (line["route"], line["path"], line["transport"]) == ("r", "voicegateway", "http")
    assert line["mode"] == ("async" if async_mode else "sync")
    assert len(line["turns"]) == 3
    assert all(turn["inputs"] for turn in line["turns"])
    assert any(turn["outputs"] for turn in line["turns"])  # what VAIC got, turn by turn
    assert line["end"]["reason"] == "client_disconnected"
    latencies = [turn.get("latency_ms") for turn in line["turns"]]  # how long VAIC waited
    if async_mode:
        assert latencies == [None] * 3
    else:
        assert all(isinstance(ms, int) and ms >= 0 for ms in latencies)
    assert SCENARIO.caller.lstrip("+") not in json.dumps(line)  # the caller's number: never
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600


async def test_an_unwritable_journal_costs_the_call_nothing(
    tmp_path: Path, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    journal = tmp_path / "missing-directory" / "calls.jsonl"
    bridge = await _bridge(bridge_factory, vg_sim, journal)
    await _call(bridge, 2)  # every turn answered 200
    assert bridge.metric("acvg_journal_dropped_total", reason="write_error") == 1
    assert not journal.exists()
