"""The replay report in a real browser: Debian's Chromium, headless, driven by playwright-core
(tests/peers/replay_browser.js) on the report.html written for a replay, opened from a file://
URL. Set ACVG_REPLAY_SCREENSHOT to a path (docs/replay-report.png) to keep the screenshot;
otherwise it goes to the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridge.replay_html import render_html
from tests.nodepeer import PEERS_DIR, node_binary

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SCRIPT = PEERS_DIR / "replay_browser.js"
SCRIPT_TIMEOUT_S = 120.0


def _require_browser() -> str:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: the replay report's browser test needs Debian's "
            "chromium (`apt-get install -y chromium`; .ci/run installs it)"
        )
    node = node_binary()
    if not (PEERS_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("tests/peers/node_modules/playwright-core is missing: run `make peers`")
    return node


def _message(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "b1c2",
        "timestamp": "2026-12-07T21:00:01.000Z",
        "text": text,
        "activityParams": {"language": "en-US", "bargeIn": True},
    }


def _turn(index: int, offset_ms: int, latency_ms: float) -> dict[str, Any]:
    return {
        "index": index,
        "offset_ms": offset_ms,
        "latency_ms": latency_ms,
        "diverged": False,
        "order_matches": True,
        "activities": [],
    }


def _call(line: int, conversation: str, turns: int) -> dict[str, Any]:
    return {
        "line": line,
        "conversation": conversation,
        "recorded_path": "legacy",
        "mode": "sync",
        "transport": "http",
        "status": "match",
        "error": None,
        "turns": [_turn(i, i * 2400, 3.0 + i) for i in range(turns)],
    }


def _report() -> dict[str, Any]:
    """What `acvg-bridge replay --route support --path legacy` writes to report.json for a journal
    of twelve calls: one says a different greeting than recorded, one could not be replayed."""
    calls = [_call(line, f"conv-{line:04d}", 3) for line in range(1, 13)]
    diverged = calls[4]
    diverged["status"] = "diverged"
    diverged["turns"][0].update(
        diverged=True,
        activities=[
            {
                "node": "say",
                "result": "mismatch",
                "fields": ["text"],
                "recorded": _message("Welcome to support. How can I help?"),
                "replayed": _message("Hello, this is support. How can I help?"),
                "diffs": [
                    {
                        "path": "text",
                        "kind": "value",
                        "recorded": "Welcome to support. How can I help?",
                        "replayed": "Hello, this is support. How can I help?",
                    }
                ],
            }
        ],
    )
    failed = calls[9]
    failed.update(status="error", error="legacy answered HTTP 503 on turn 0", turns=[])
    return {
        "version": "acvg-replay-report/1",
        "journal": "/var/lib/acvg-bridge/support.jsonl",
        "route": "support",
        "path": "legacy",
        "started_at": "2026-12-07T21:00:00Z",
        "seconds": 4.7,
        "speed": 0.0,
        "concurrency": 4,
        "summary": {
            "calls": 13,
            "replayed": 11,
            "errors": 1,
            "skipped": 1,
            "turns": 33,
            "turns_matched": 32,
            "match_rate": 32 / 33,
            "fail_under": 1.0,
            "passed": False,
        },
        "recorded_paths": {"legacy": 13},
        "nodes": [
            {
                "node": "say",
                "activities": 33,
                "match": 32,
                "mismatch": 1,
                "missing": 0,
                "extra": 0,
                "match_rate": 32 / 33,
                "fields": {"text": 1},
            },
            {
                "node": "play",
                "activities": 11,
                "match": 11,
                "mismatch": 0,
                "missing": 0,
                "extra": 0,
                "match_rate": 1.0,
                "fields": {},
            },
            {
                "node": "transfer_dial",
                "activities": 4,
                "match": 4,
                "mismatch": 0,
                "missing": 0,
                "extra": 0,
                "match_rate": 1.0,
                "fields": {},
            },
        ],
        "latency": {"legacy": {"turns": 33, "p50_ms": 4.1, "p95_ms": 5.9, "p99_ms": 6.0}},
        "problems": [{"file": "support.jsonl", "line": 13, "reason": "not JSON: Expecting value"}],
        "calls": calls,
    }


def _screenshot_path(tmp_path: Path) -> Path:
    wanted = os.environ.get("ACVG_REPLAY_SCREENSHOT")
    return Path(wanted).resolve() if wanted else tmp_path / "replay-report.png"


def test_replay_report_in_chromium(tmp_path: Path) -> None:
    node = _require_browser()
    report = _report()
    directory = tmp_path / "report"
    directory.mkdir()
    (directory / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    page = directory / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    screenshot = _screenshot_path(tmp_path)

    done = subprocess.run(
        [
            node,
            str(SCRIPT),
            "--file",
            str(page),
            "--screenshot",
            str(screenshot),
            "--match-rate",
            "96.9 %",
            "--nodes",
            ",".join(n["node"] for n in report["nodes"]),
            "--node",
            "say",
            "--field",
            "text",
        ],
        cwd=PEERS_DIR,
        env={**os.environ, "CHROMIUM": str(CHROMIUM)},
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, f"replay_browser.js failed after {lines[-1:]}:\n{done.stderr}"
    assert lines[-1] == "OK"
    assert screenshot.stat().st_size > 10_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
