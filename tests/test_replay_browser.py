"""The replay report in a real browser: Debian's Chromium, headless, driven by playwright-core
(tests/peers/replay_browser.js) on the report.html written for a replay, opened from a file://
URL: the report of a real replay of recorded demo calls against the divergent flows, whose
differing prompt text must show highlighted. Set ACVG_REPLAY_SCREENSHOT to a path
(docs/replay-report.png) to keep the screenshot; otherwise it goes to the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.sim.demo import DEMO_RUNS
from bridge.sim.recorded import DIVERGENT, SYNC, Endpoints, endpoint_config, record_calls
from tests.nodepeer import PEERS_DIR, node_binary

ROOT = Path(__file__).resolve().parent.parent
# Two scenarios whose flows the divergent variant changes (a prompt text, a transfer target)
# and one it leaves alone.
NAMES = ["greeting", "transfer_dial", "spoken_answer"]

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


async def _report(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """What `acvg-bridge replay` writes for the legacy journal of a few demo calls replayed
    against the divergent legacy flows: report.html and the report.json beside it."""
    journal, directory = tmp_path / "legacy.jsonl", tmp_path / "report"
    async with Endpoints() as endpoints:
        results = await record_calls(endpoints, journal, "legacy", runs=DEMO_RUNS[:1], names=NAMES)
        assert all(r.passed for r in results), [r.failure for r in results]
        config = tmp_path / "config.yaml"
        config.write_text(endpoint_config(endpoints))
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "bridge",
                "replay",
                str(journal),
                "--config",
                str(config),
                "--route",
                DIVERGENT,
                "--from-route",
                SYNC,
                "--path",
                "legacy",
                "--speed",
                "0",
                "--report",
                str(directory),
            ],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            cwd=ROOT,
        )
    assert done.returncode == 1, done.stdout + done.stderr  # the divergent flows: below 100 %
    report: dict[str, Any] = json.loads((directory / "report.json").read_text())
    return directory / "report.html", report


def _screenshot_path(tmp_path: Path) -> Path:
    wanted = os.environ.get("ACVG_REPLAY_SCREENSHOT")
    return Path(wanted).resolve() if wanted else tmp_path / "replay-report.png"


async def test_replay_report_in_chromium(tmp_path: Path) -> None:
    node = _require_browser()
    page, report = await _report(tmp_path)
    screenshot = _screenshot_path(tmp_path)
    rate = math.floor(round(report["summary"]["match_rate"] * 1000, 6)) / 10
    assert 0 < rate < 100

    done = await asyncio.to_thread(
        subprocess.run,
        [
            node,
            str(SCRIPT),
            "--file",
            str(page),
            "--screenshot",
            str(screenshot),
            "--match-rate",
            f"{rate:.1f} %",
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
