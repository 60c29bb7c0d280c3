"""bridge/replay.py end to end: the demo's calls recorded on each path through a recording
bridge, then replayed against the simulators — the legacy journal on voicegateway matches in
full, against the divergent flows it shows exactly the known fields, a journal replayed on its
own path matches itself, and the replay marker reaches both upstreams."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import parse_config
from bridge.journal_reader import Entry, read_journal
from bridge.path import PathName
from bridge.replay import REPLAY_HEADER, ReplayedCall, Replayer, ReplayOptions, comparable
from bridge.sim.demo import DEMO_RUNS, DIVERGENT_EXPECTED, demo_callers
from bridge.sim.recorded import ASYNC, DIVERGENT, SYNC, Endpoints, endpoint_config, record_calls
from bridge.sim.scenario import StepKind, load_scenarios

FAST = ReplayOptions(speed=0, concurrency=8)


@pytest.fixture(scope="module")
def journals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The shipped scenarios over every way in, recorded once on each path."""
    folder = tmp_path_factory.mktemp("journals")

    async def record() -> dict[str, Path]:
        out: dict[str, Path] = {}
        async with Endpoints() as endpoints:
            for path in ("legacy", "voicegateway"):
                out[path] = folder / f"{path}.jsonl"
                results = await record_calls(endpoints, out[path], path)  # type: ignore[arg-type]
                failed = [r.failure for r in results if not r.passed]
                assert not failed, failed
        return out

    yield asyncio.run(record())


def entries_of(journal: Path, route: str) -> list[Entry]:
    entries, problems = read_journal(journal)
    assert not problems
    return [e for e in entries if e.call.route == route]


async def replay(
    endpoints: Endpoints,
    entries: list[Entry],
    route: str,
    path: PathName,
    options: ReplayOptions = FAST,
) -> list[ReplayedCall]:
    config = parse_config(endpoint_config(endpoints), env={})
    async with Replayer(config, route, path, options) as replayer:
        return await replayer.play_all(entries)


def mismatches(results: list[ReplayedCall]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for result in results:
        assert result.error is None, result.error
        for turn in result.turns:
            assert turn.comparison is not None
            for item in turn.comparison.items:
                if item.result.value != "match":
                    found.update((item.node, f) for f in item.fields or (item.result.value,))
    return found


def test_journal_covers_every_way_in(journals: dict[str, Path]) -> None:
    entries, _ = read_journal(journals["legacy"])
    ways = {(e.call.route, e.call.transport, e.call.mode) for e in entries}
    assert ways == {
        (run.route, run.transport, "async" if run.async_mode else "sync") for run in DEMO_RUNS
    }
    assert {e.call.path for e in entries} == {"legacy"}
    assert len(entries) == len(DEMO_RUNS) * len(load_scenarios())


UUID_KEYS = frozenset({"id", "conversation", "vaigConversationId", "callIdentification"})


def without_uuids(value: Any) -> Any:
    """`value` without the random ids VAIC and the simulators make up (any digits occur in
    them), which the journal keeps as they are."""
    if isinstance(value, dict):
        return {k: without_uuids(v) for k, v in value.items() if k not in UUID_KEYS}
    if isinstance(value, list):
        return [without_uuids(v) for v in value]
    return value


def test_journal_holds_no_caller_number_nor_long_dtmf(journals: dict[str, Path]) -> None:
    scenarios = demo_callers(load_scenarios())
    secrets = set()
    for scenario in scenarios:
        number = phonenumbers.parse(scenario.caller)
        secrets.add(phonenumbers.national_significant_number(number))
        for step in scenario.steps:
            if step.kind is StepKind.DTMF and len(re.sub(r"\D", "", str(step.arg))) > 2:
                secrets.add(re.sub(r"\D", "", str(step.arg)))
    assert any(len(s) > 2 and not s.startswith("151") for s in secrets), "no long DTMF to look for"
    for journal in journals.values():
        lines = [without_uuids(json.loads(line)) for line in journal.read_text().splitlines()]
        text = json.dumps(lines)
        for secret in secrets:
            assert not re.search(rf"(?<![0-9]){secret}(?![0-9])", text), secret


@pytest.mark.parametrize("route", [SYNC, ASYNC])
async def test_legacy_journal_matches_in_full_on_voicegateway(
    journals: dict[str, Path], route: str
) -> None:
    entries = entries_of(journals["legacy"], route)
    async with Endpoints() as endpoints:
        results = await replay(endpoints, entries, route, "voicegateway")
    assert mismatches(results) == set()
    assert len(results) == len(entries) == 2 * len(load_scenarios())
    assert all(len(r.turns) == len(r.call.turns) for r in results)
    assert {r.call.transport for r in results} == {"http", "ws"}


async def test_divergent_flows_show_exactly_the_known_fields(journals: dict[str, Path]) -> None:
    entries = entries_of(journals["legacy"], SYNC)
    async with Endpoints() as endpoints:
        results = await replay(endpoints, entries, DIVERGENT, "legacy")
    # Where a call first diverges, it is on a known field; later turns may differ as a
    # consequence (the recorded caller reacts to a prompt the divergent flow did not play).
    first: set[tuple[str, str]] = set()
    for result in results:
        assert result.error is None, result.error
        turn = next((t for t in result.turns if t.comparison and t.comparison.diverged), None)
        if turn is not None and turn.comparison is not None:
            first |= mismatches([ReplayedCall(result.line, result.call, [turn])])
    assert first == set(DIVERGENT_EXPECTED.values())
    diverged = [r for r in results if r.diverged]
    assert 0 < len(diverged) < len(results)


async def test_voicegateway_journal_replays_on_legacy(journals: dict[str, Path]) -> None:
    """Rollback safety: what voicegateway answered, the legacy flows answer too."""
    entries = entries_of(journals["voicegateway"], SYNC)
    async with Endpoints() as endpoints:
        results = await replay(endpoints, entries, SYNC, "legacy")
    assert mismatches(results) == set()


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.data(),
    path=st.sampled_from(["legacy", "voicegateway"]),
    route=st.sampled_from([SYNC, ASYNC]),
    concurrency=st.integers(1, 6),
)
def test_a_journal_replayed_on_its_own_path_matches_itself(
    journals: dict[str, Path], data: st.DataObject, path: PathName, route: str, concurrency: int
) -> None:
    entries = entries_of(journals[path], route)
    chosen = data.draw(st.lists(st.sampled_from(entries), min_size=1, max_size=6, unique_by=id))

    async def run() -> list[ReplayedCall]:
        async with Endpoints() as endpoints:
            return await replay(
                endpoints, chosen, route, path, ReplayOptions(speed=0, concurrency=concurrency)
            )

    results = asyncio.run(run())
    assert mismatches(results) == set()
    assert [r.line for r in results] == [e.line for e in chosen]


async def test_replay_marker_reaches_both_upstreams(journals: dict[str, Path]) -> None:
    entries = entries_of(journals["legacy"], SYNC)[:2]
    async with Endpoints() as endpoints:
        await replay(endpoints, entries, SYNC, "voicegateway")
        await replay(endpoints, entries, SYNC, "legacy")
        news = [
            message
            for call in endpoints.vg.calls.values()
            for message in call.received
            if message.get("type") == "session:new"
        ]
        assert news
        for message in news:
            data = message["data"]
            assert data["customerData"]["acvg"] == {"replay": True}
            assert data["sip"]["headers"][REPLAY_HEADER] == "true"
        starts = [
            activity
            for request in endpoints.legacy.requests
            if isinstance(request.body, dict)
            for activity in request.body.get("activities", [])
            if activity.get("name") == "start"
        ]
        assert starts
        assert all(a["parameters"]["acvgReplay"] is True for a in starts)


async def test_a_served_call_carries_no_replay_marker(tmp_path: Path) -> None:
    async with Endpoints() as endpoints:
        results = await record_calls(
            endpoints, tmp_path / "j.jsonl", "voicegateway", runs=DEMO_RUNS[:1], names=["greeting"]
        )
        assert all(r.passed for r in results)
        news = [
            message["data"]
            for call in endpoints.vg.calls.values()
            for message in call.received
            if message.get("type") == "session:new"
        ]
        assert news and all("acvg" not in d["customerData"] for d in news)
        assert all(REPLAY_HEADER not in d["sip"].get("headers", {}) for d in news)


async def test_an_upstream_that_refuses_is_an_error_per_call_and_the_rest_goes_on(
    journals: dict[str, Path],
) -> None:
    entries = entries_of(journals["legacy"], SYNC)[:4]
    async with Endpoints() as endpoints:
        await endpoints.vg.stop()  # nothing listens on the voicegateway URL any more
        results = await replay(endpoints, entries, SYNC, "voicegateway")
        legacy = await replay(endpoints, entries, SYNC, "legacy")
        await endpoints.vg.start()
    assert len(results) == 4
    assert all(r.error is not None or r.matched_turns < len(r.call.turns) for r in results)
    assert mismatches(legacy) == set()


def test_comparable_keeps_kept_numbers_and_shapes_the_others() -> None:
    kept = frozenset({"+4989123456"})
    value: dict[str, Any] = {
        "id": "123456789",
        "text": "Call +4989123456 or +4930111999",
        "activityParams": {"dtmfDigits": "4711#", "transferTarget": "tel:+4989654321"},
    }
    out = comparable(value, 2, "DE", kept)
    assert out["id"] == "123456789"
    assert "+4989123456" in out["text"] and "+4930111999" not in out["text"]
    assert out["activityParams"]["dtmfDigits"] == "XXXX#"
    assert out["activityParams"]["transferTarget"].startswith("tel:<phone +49 ")
    same = comparable({"text": "Call +4930111888"}, 2, "DE", kept)
    assert same["text"] == comparable({"text": "Call +4930111999"}, 2, "DE", kept)["text"]


@pytest.mark.parametrize("route", [SYNC, ASYNC])
async def test_speed_scales_the_recorded_timings(journals: dict[str, Path], route: str) -> None:
    """Turns go out no earlier than their recorded offset divided by `speed`, and still match."""
    [entry] = [e for e in entries_of(journals["legacy"], route) if len(e.call.turns) >= 3][:1]
    turns = [t.model_copy(update={"offset_ms": 600 * i}) for i, t in enumerate(entry.call.turns)]
    end = entry.call.end.model_copy(update={"offset_ms": 600 * len(turns)})
    call = entry.call.model_copy(update={"turns": turns, "end": end})
    async with Endpoints() as endpoints:
        [result] = await replay(
            endpoints, [Entry(entry.line, call)], route, "legacy", ReplayOptions(speed=2)
        )
    assert mismatches([result]) == set()
    for turn in result.turns:
        assert turn.sent_s is not None and turn.sent_s >= turn.offset_ms / 1000 / 2
