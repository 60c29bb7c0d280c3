"""`acvg-bridge replay` (design §2.6): read a journal, replay its calls, print the per-node
table, write report.json and report.html, and exit 0 (match rate at least `--fail-under`),
1 (below it) or 2 (a bad journal or config: the reasons are printed, never a traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bridge.config import load_config
from bridge.errors import ConfigError, MappingError
from bridge.journal_reader import Entry, JournalError, read_journal
from bridge.path import PathName
from bridge.replay import Replayer, ReplayOptions, choose_path
from bridge.replay_report import Progress, ReportMeta, build_report, node_table

__all__ = ["add_parser", "run"]

EXIT_PASS, EXIT_BELOW, EXIT_BAD_INPUT = 0, 1, 2


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a share between 0 and 1, e.g. 0.98")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("0 or more")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("1 or more")
    return value


def add_parser(sub: Any) -> None:
    replay = sub.add_parser(
        "replay",
        help="replay a call journal against a path and compare it turn by turn",
        description="Play every recorded call of JOURNAL against the chosen path of route R, "
        "compare each turn with what was recorded, print the per-node table and write the "
        "report. Exit 0 if the match rate is at least --fail-under, 1 below it, 2 on a bad "
        "journal or config.",
    )
    replay.add_argument("journal", help="an acvg-journal/1 file (a route's record.path)")
    replay.add_argument("--config", required=True, help="YAML configuration file")
    replay.add_argument("--route", required=True, help="the config's route to play against")
    replay.add_argument(
        "--path",
        choices=("voicegateway", "legacy"),
        help="the path to replay against (default: voicegateway when the route has it)",
    )
    replay.add_argument(
        "--from-route",
        help="replay the calls recorded on this route (default: --route); others are skipped",
    )
    replay.add_argument(
        "--speed",
        type=_non_negative,
        default=1.0,
        help="recorded timings divided by this (default 1: real time; 0: as fast as possible)",
    )
    replay.add_argument(
        "--concurrency", type=_positive_int, default=8, help="calls at once (default 8)"
    )
    replay.add_argument("--report", help="directory for report.json and report.html")
    replay.add_argument(
        "--fail-under",
        type=_rate,
        default=1.0,
        help="exit 1 when the share of matching turns is below this (default 1.0)",
    )
    replay.add_argument(
        "--strict", action="store_true", help="stop at the first bad journal line (exit 2)"
    )
    replay.set_defaults(run=run)


def _say(out: TextIO, *lines: str) -> None:
    for line in lines:
        print(line, file=out)


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        config = load_config(args.config)
        route = config.routes.get(args.route)
        if route is None:
            known = ", ".join(sorted(config.routes))
            raise ConfigError("--route", f"{args.route!r} is not in the config (routes: {known})")
        path: PathName = choose_path(route, args.path)
    except (ConfigError, MappingError) as exc:
        _say(err, f"error: {exc}")
        return EXIT_BAD_INPUT
    try:
        entries, problems = read_journal(Path(args.journal), strict=args.strict)
    except JournalError as exc:
        _say(err, f"error: {exc.problem}")
        return EXIT_BAD_INPUT
    for problem in problems:
        _say(err, f"skipped: {problem}")
    recorded_on = args.from_route or args.route
    chosen = [e for e in entries if e.call.route == recorded_on]
    skipped = len(entries) - len(chosen)
    if not chosen:
        _say(
            err,
            f"error: {args.journal}: no call recorded on route {recorded_on!r} "
            f"({len(entries)} calls, {len(problems)} bad lines)",
        )
        return EXIT_BAD_INPUT
    options = ReplayOptions(speed=args.speed, concurrency=args.concurrency)
    logging.getLogger("bridge").setLevel(max(logging.WARNING, logging.getLogger().level))
    started = datetime.now(UTC)
    t0 = time.monotonic()
    try:
        results = asyncio.run(_replay(config, args.route, path, options, chosen, err))
    except (ConfigError, MappingError) as exc:
        _say(err, f"error: {exc}")
        return EXIT_BAD_INPUT
    meta = ReportMeta(
        journal=str(args.journal),
        route=args.route,
        path=path,
        speed=args.speed,
        concurrency=args.concurrency,
        fail_under=args.fail_under,
        started_at=started,
        seconds=time.monotonic() - t0,
        skipped=skipped,
    )
    report = build_report(results, problems, meta)
    _say(out, *node_table(report))
    if args.report:
        written = _write(Path(args.report), report)
        _say(out, f"report: {written}")
    if problems:
        return EXIT_BAD_INPUT
    return EXIT_PASS if report["summary"]["passed"] else EXIT_BELOW


async def _replay(
    config: Any,
    route: str,
    path: PathName,
    options: ReplayOptions,
    entries: list[Entry],
    err: TextIO,
) -> list[Any]:
    progress = Progress(len(entries), err)
    try:
        async with Replayer(config, route, path, options) as replayer:
            return await replayer.play_all(entries, progress)
    finally:
        progress.close()


def _write(directory: Path, report: dict[str, Any]) -> Path:
    from bridge.replay_html import render_html

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(
        json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    page = directory / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    os.chmod(page, 0o600)  # it holds what the journal holds
    os.chmod(directory / "report.json", 0o600)
    return page
