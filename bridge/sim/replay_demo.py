"""The demo's record-and-replay phase: the scenarios' calls recorded on the legacy path to a
journal, then replayed against voicegateway (the migration question: every turn must match)
and against the divergent legacy flows (each call must first diverge on a known field).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bridge.config import parse_config
from bridge.journal_reader import read_journal
from bridge.path import PathName
from bridge.replay import ReplayedCall, Replayer, ReplayOptions
from bridge.replay_report import ReportMeta, build_report, node_table
from bridge.sim.demo import DIVERGENT_EXPECTED
from bridge.sim.recorded import DIVERGENT, SYNC, Endpoints, endpoint_config, record_calls

__all__ = ["first_divergences", "replay_phase"]


def first_divergences(results: list[ReplayedCall]) -> set[tuple[str, str]]:
    """(node, field) of where each diverging call first differs."""
    found: set[tuple[str, str]] = set()
    for result in results:
        for turn in result.turns:
            if turn.comparison is not None and turn.comparison.diverged:
                for item in turn.comparison.items:
                    if item.result.value != "match":
                        found.update((item.node, f) for f in item.fields or (item.result.value,))
                break
    return found


async def replay_phase(say: Callable[..., None], check: Callable[[bool, str], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="acvg-replay-") as folder:
        journal = Path(folder) / "legacy.jsonl"
        async with Endpoints() as endpoints:
            recorded = await record_calls(endpoints, journal, "legacy")
            entries, problems = read_journal(journal)
            calls = [e for e in entries if e.call.route == SYNC]
            check(
                all(r.passed for r in recorded) and not problems and bool(calls),
                f"journal: {len(entries)} calls recorded on legacy, {len(problems)} bad lines",
            )
            config = parse_config(endpoint_config(endpoints), env={})

            async def replay(route: str, path: PathName) -> list[ReplayedCall]:
                async with Replayer(config, route, path, ReplayOptions(speed=0)) as replayer:
                    return await replayer.play_all(calls)

            t0 = time.monotonic()
            on_vg = await replay(SYNC, "voicegateway")
            seconds = time.monotonic() - t0
            divergent = await replay(DIVERGENT, "legacy")
    meta = ReportMeta(journal.name, SYNC, "voicegateway", 0, 8, 1.0, datetime.now(UTC), seconds)
    report = build_report(on_vg, [], meta)
    say(
        "",
        f"Record and replay: route {SYNC}'s {len(calls)} legacy calls from the journal, "
        "replayed against voicegateway (acvg-bridge replay):",
    )
    say(*node_table(report)[:-1])
    summary = report["summary"]
    check(
        summary["match_rate"] == 1.0 and summary["errors"] == 0,
        f"replay on voicegateway: {summary['turns_matched']}/{summary['turns']} turns match",
    )
    first = first_divergences(divergent)
    expected = set(DIVERGENT_EXPECTED.values())
    check(
        first == expected,
        "replay on the divergent flows: first divergences exactly "
        + ", ".join(f"{node} {field}" for node, field in sorted(first)),
    )
