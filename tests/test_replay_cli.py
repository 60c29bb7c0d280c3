"""`acvg-bridge replay` as a process: exit 0 at or above `--fail-under`, 1 below it, 2 on a bad
journal or config (file:line and reason, never a traceback); report.json and report.html in
`--report`; calls whose upstream refuses are errors with their reason while the rest goes on."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.sim.recorded import SYNC, Endpoints, endpoint_config, record_calls

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["greeting", "transfer_dial", "dtmf_menu"]


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("cli") / "legacy.jsonl"

    async def record() -> None:
        async with Endpoints() as endpoints:
            results = await record_calls(endpoints, path, "legacy", names=NAMES)
            assert all(r.passed for r in results), [r.failure for r in results]

    asyncio.run(record())
    yield path


async def run_cli(tmp_path: Path, endpoints: Endpoints, *args: str) -> tuple[int, str, str]:
    config = tmp_path / "config.yaml"
    config.write_text(endpoint_config(endpoints))
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bridge", "replay", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


async def test_full_match_exits_0_and_writes_the_report(journal: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    async with Endpoints() as endpoints:
        code, out, err = await run_cli(
            tmp_path,
            endpoints,
            str(journal),
            "--route",
            SYNC,
            "--path",
            "voicegateway",
            "--speed",
            "0",
            "--report",
            str(report),
        )
    assert code == 0, (out, err)
    assert "PASS" in out and "100.0 %" in out
    assert "say" in out and "transfer_dial" in out
    data: dict[str, Any] = json.loads((report / "report.json").read_text())
    assert data["version"] == "acvg-replay-report/1"
    assert data["summary"]["calls"] == 2 * len(NAMES)  # http and ws on route support
    assert data["summary"]["match_rate"] == 1.0
    page = (report / "report.html").read_text()
    assert "acvg-bridge replay report" in page
    for written in (report / "report.json", report / "report.html"):
        assert stat.S_IMODE(os.stat(written).st_mode) == 0o600


async def test_divergent_flows_exit_1_below_fail_under(journal: Path, tmp_path: Path) -> None:
    args = [str(journal), "--route", "support_divergent", "--from-route", SYNC, "--path", "legacy"]
    async with Endpoints() as endpoints:
        code, out, _ = await run_cli(tmp_path, endpoints, *args, "--speed", "0")
        assert code == 1
        assert "FAIL" in out and "transferTarget" in out
        lenient, _, _ = await run_cli(
            tmp_path, endpoints, *args, "--speed", "0", "--fail-under", "0.2"
        )
    assert lenient == 0


def write_bad_journal(journal: Path, tmp_path: Path) -> Path:
    good = journal.read_text().splitlines()
    wrong_version = json.loads(good[0]) | {"version": "acvg-journal/9"}
    no_turns = json.loads(good[0])
    del no_turns["turns"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join([good[0], "{not json", json.dumps(wrong_version), json.dumps(no_turns), good[1]])
        + "\n"
    )
    return bad


async def test_bad_lines_are_named_skipped_and_exit_2(journal: Path, tmp_path: Path) -> None:
    bad = write_bad_journal(journal, tmp_path)
    async with Endpoints() as endpoints:
        code, out, err = await run_cli(
            tmp_path, endpoints, str(bad), "--route", SYNC, "--speed", "0"
        )
        assert code == 2
        assert f"{bad}:2: not JSON" in err
        assert f"{bad}:3: unknown version 'acvg-journal/9'" in err
        assert f"{bad}:4: turns: Field required" in err
        assert "2 calls replayed" in out  # lines 1 and 5 were replayed anyway
        code, out, err = await run_cli(
            tmp_path, endpoints, str(bad), "--route", SYNC, "--speed", "0", "--strict"
        )
    assert code == 2
    assert f"{bad}:2: not JSON" in err and ":3:" not in err
    assert "calls replayed" not in out


async def test_bad_config_and_missing_journal_exit_2(journal: Path, tmp_path: Path) -> None:
    async with Endpoints() as endpoints:
        code, _, err = await run_cli(tmp_path, endpoints, str(journal), "--route", "nope")
        assert code == 2 and "'nope' is not in the config" in err
        code, _, err = await run_cli(tmp_path, endpoints, str(tmp_path / "none"), "--route", SYNC)
        assert code == 2 and "cannot read" in err
        code, _, err = await run_cli(
            tmp_path, endpoints, str(journal), "--route", SYNC, "--from-route", "other"
        )
        assert code == 2 and "no call recorded on route 'other'" in err


async def test_a_refusing_upstream_makes_errors_not_a_crash(journal: Path, tmp_path: Path) -> None:
    async with Endpoints() as endpoints:
        config = tmp_path / "config.yaml"
        config.write_text(endpoint_config(endpoints))
        await endpoints.legacy.stop()  # the legacy URL now refuses connections
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
                SYNC,
                "--path",
                "legacy",
                "--speed",
                "0",
                "--report",
                str(tmp_path / "r"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        await endpoints.legacy.start()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["summary"]["match_rate"] < 1.0
    assert data["summary"]["calls"] == 2 * len(NAMES)
