"""What the access log costs a request: aiohttp's default access logger (the Apache line
`serve` wrote before issue 16, scrubbed by the RedactingFilter) against the bridge's short line
(bridge/access_log.py), the short line with its logger below INFO, and no access log at all
(`serve --no-access-log`), measured side by side in one run.

One bridge process at a time, served exactly as `serve` serves (bridge/cli.py `_run`, the
stderr handler of `configure_logging("INFO")` writing to a file), its CPU read from /proc,
pinned to core 0 when there are two cores or more; the load and the simulated Cognigy VG
endpoint run in this process, on the other cores. Two phases per set-up:
- `healthz`: `--requests` GET /healthz, closed loop over `--connections` keep-alive
  connections (the cheapest request, so the logger's share is largest);
- `turns`: calls created and greeted first, then `--rate` turns/s (one VAIC activities POST
  each, one turn in flight per call) for `--seconds`, open loop.
The set-ups are interleaved (order rotated) for `--rounds` rounds; medians are reported, with
the median of each round's difference to `off`. The child also sums the CPU its thread spends
inside the access logger's `log` (`time.thread_time`, read at each phase's start and end on
SIGUSR1): the logger's own cost, without what it does to the caches of the rest of the turn.

    python -m bench.access_log [--requests 5000] [--rate 100] [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import thread_time
from typing import Any

import aiohttp
import yaml
from aiohttp import web_log
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from bench.cluster_cost import TOKEN, _turn
from bench.procs import cpu_seconds, free_port, wait_http
from bridge.access_log import AccessLogger, runner_options
from bridge.app import create_app
from bridge.cli import _run
from bridge.config import load_config
from bridge.logs import configure_logging
from bridge.sim.vg_endpoint import VGEndpointSim


@dataclass(frozen=True)
class Setup:
    name: str
    access_log: str  # "aiohttp" (aiohttp's default class), "short" or "off"
    level: str
    about: str


SETUPS = (
    Setup("aiohttp", "aiohttp", "INFO", "aiohttp's default access logger (before)"),
    Setup("short", "short", "INFO", "bridge/access_log.py (serve's default now)"),
    Setup("short_quiet", "short", "WARNING", "the short logger, --log-level WARNING"),
    Setup("off", "off", "INFO", "serve --no-access-log"),
)
BY_NAME = {s.name: s for s in SETUPS}


# In the child: calls of the access logger's `log` and the CPU spent in them (its thread's).
_SPENT = {"calls": 0, "cpu": 0.0}
MARK = "bench-access-log"


class _TimedAiohttp(web_log.AccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        started = thread_time()
        super().log(request, response, time)
        _SPENT["cpu"] += thread_time() - started
        _SPENT["calls"] += 1


class _TimedShort(AccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        started = thread_time()
        super().log(request, response, time)
        _SPENT["cpu"] += thread_time() - started
        _SPENT["calls"] += 1


def _write_mark(signum: int, frame: object) -> None:
    sys.stderr.write(f"{MARK} calls={_SPENT['calls']} cpu={_SPENT['cpu']:.6f}\n")
    sys.stderr.flush()


def serve_child(setup: Setup, config: Path, port: int) -> None:
    """The bridge as `serve` runs it, with `setup`'s access log (the child process); SIGUSR1
    writes how often the access logger ran and the CPU it took so far to stderr."""
    options = runner_options(setup.access_log == "short")
    if setup.access_log == "short":
        assert options == {"access_log_class": AccessLogger}
        options = {"access_log_class": _TimedShort}
    elif setup.access_log == "aiohttp":
        options = {"access_log_class": _TimedAiohttp}  # what JsonErrorRunner had by default
    configure_logging(setup.level)
    app = create_app(load_config(config))
    signal.signal(signal.SIGUSR1, _write_mark)
    asyncio.run(_run(app, "127.0.0.1", port, options))


def _config(vg_url: str) -> dict[str, Any]:
    return {
        "drain_timeout_s": 0,  # the phase is over: end its calls at once
        "routes": {"r": {"token": TOKEN, "max_calls": 100_000, "voicegateway": {"url": vg_url}}},
    }


async def _healthz(
    http: aiohttp.ClientSession,
    base: str,
    pid: int,
    mark: Callable[[], None],
    requests: int,
    connections: int,
) -> float:
    """CPU ms of the bridge per GET /healthz."""
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with http.get(f"{base}/healthz") as reply:
                await reply.read()

    mark()
    cpu0 = cpu_seconds(pid)
    await asyncio.gather(*(worker() for _ in range(connections)))
    cpu = cpu_seconds(pid) - cpu0
    mark()
    return 1000 * cpu / requests


async def _turns(
    http: aiohttp.ClientSession,
    base: str,
    pid: int,
    mark: Callable[[], None],
    calls: int,
    rate: float,
    seconds: float,
) -> tuple[float, int]:
    """CPU ms of the bridge per turn, and the number of turns."""
    ids = [str(uuid.uuid4()) for _ in range(calls)]
    for conversation in ids:
        async with http.post(
            f"{base}/ac/r",
            json={"conversation": conversation},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as reply:
            await reply.read()
    await asyncio.gather(*(_turn(http, base, c, 0) for c in ids))
    busy: set[str] = set()
    done = 0

    async def one(conversation: str) -> None:
        nonlocal done
        try:
            await _turn(http, base, conversation, 1)
            done += 1
        finally:
            busy.discard(conversation)

    tasks: list[asyncio.Task[None]] = []
    mark()
    cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = wall0 + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conversation = ids[n % calls]
        if conversation not in busy:
            busy.add(conversation)
            tasks.append(asyncio.create_task(one(conversation)))
    await asyncio.gather(*tasks)
    cpu = cpu_seconds(pid) - cpu0
    mark()
    for conversation in ids:  # ended here, the bridge stops at once
        async with http.post(
            f"{base}/ac/r/conversation/{conversation}/disconnect",
            json={"conversation": conversation, "reasonCode": "client-disconnected"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as reply:
            await reply.read()
    return 1000 * cpu / max(1, done), done


def _pinned() -> list[str]:
    """`taskset -c 0` when there are two cores or more (the load runs on the others)."""
    taskset = shutil.which("taskset")
    return [taskset, "-c", "0"] if taskset and (os.cpu_count() or 1) > 1 else []


async def _phase(setup: Setup, vg_url: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bridge.yaml"
        config.write_text(yaml.safe_dump(_config(vg_url)))
        log = Path(tmp) / "stderr.log"
        command = [
            sys.executable, "-m", "bench.access_log", "--serve", setup.name,
            "--config", str(config), "--port", str(port),
        ]  # fmt: skip
        with log.open("w") as stderr:
            bridge = subprocess.Popen(_pinned() + command, stderr=stderr)
        base = f"http://127.0.0.1:{port}"
        try:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                await wait_http(f"{base}/healthz", http=http)

                def mark() -> None:
                    bridge.send_signal(signal.SIGUSR1)

                healthz = await _healthz(
                    http, base, bridge.pid, mark, args.requests, args.connections
                )
                turn, turns = await _turns(
                    http, base, bridge.pid, mark, args.calls, args.rate, args.seconds
                )
        finally:
            bridge.terminate()
            bridge.wait(20)
        text = log.read_text().splitlines()
    lines = [line for line in text if " aiohttp.access " in line]
    marks = [line.split() for line in text if line.startswith(MARK)]
    spent = [(int(m[1].split("=")[1]), float(m[2].split("=")[1])) for m in marks]
    logger: dict[str, float] = {}
    if len(spent) == 4:  # before and after each of the two phases
        logger["healthz_logger"] = 1000 * (spent[1][1] - spent[0][1]) / args.requests
        logger["turn_logger"] = 1000 * (spent[3][1] - spent[2][1]) / max(1, turns)
        logger["turn_logger_calls"] = spent[3][0] - spent[2][0]
    return {"healthz": healthz, "turn": turn, "turns": turns, "lines": lines, **logger}


async def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    setups = [BY_NAME[name] for name in args.setups]
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in setups}
    cores = os.sched_getaffinity(0)
    if _pinned() and cores - {0}:
        os.sched_setaffinity(0, cores - {0})
    async with VGEndpointSim(record=False) as sim:
        for r in range(args.rounds):
            for setup in setups[r % len(setups) :] + setups[: r % len(setups)]:
                runs[setup.name].append(await _phase(setup, sim.url(), args))
    off = runs.get("off")
    figures: dict[str, dict[str, Any]] = {}
    for name, phases in runs.items():
        f: dict[str, Any] = {
            "lines": statistics.median(len(p["lines"]) for p in phases),
            "sample": next((s for p in phases for s in p["lines"] if "activities" in s), ""),
        }
        for key in ("healthz", "turn"):
            f[key] = statistics.median(p[key] for p in phases)
            f[f"{key}_range"] = (min(p[key] for p in phases), max(p[key] for p in phases))
            if off is not None:  # round by round against off, then the median
                f[f"{key}_vs_off"] = statistics.median(
                    p[key] - o[key] for p, o in zip(phases, off, strict=True)
                )
            inside = [p[f"{key}_logger"] for p in phases if f"{key}_logger" in p]
            if inside:
                f[f"{key}_logger"] = statistics.median(inside)
        figures[name] = f
    return figures


def report(figures: dict[str, dict[str, Any]]) -> list[str]:
    """A markdown table and a sample line per set-up. Per phase: the bridge's CPU per request
    (median, range over the rounds), the median of each round's difference to `off`, and the
    CPU inside the access logger's `log` per request."""
    rows = [
        "| set-up | access lines | CPU µs / GET /healthz (range) | vs off | in the logger "
        "| CPU ms / turn (range) | vs off | in the logger |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in figures.items():
        cells = [f"{name} ({BY_NAME[name].about})", f"{f['lines']:.0f}"]
        for key, scale, digits in (("healthz", 1000, 0), ("turn", 1, 3)):
            low, high = f[f"{key}_range"]
            cells.append(
                f"{scale * f[key]:.{digits}f} ({scale * low:.{digits}f}-{scale * high:.{digits}f})"
            )
            delta = f.get(f"{key}_vs_off")
            cells.append("" if delta is None else f"{1000 * delta:+.0f} µs")
            inside = f.get(f"{key}_logger")
            cells.append("" if inside is None else f"{1000 * inside:.1f} µs")
        rows.append("| " + " | ".join(cells) + " |")
    rows.append("")
    for name, f in figures.items():
        if f["sample"]:
            rows.append(f"{name}: `{f['sample']}`")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--setups", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    parser.add_argument("--serve", choices=list(BY_NAME), help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_child(BY_NAME[args.serve], args.config, args.port)
        return
    started = time.perf_counter()
    figures = asyncio.run(run(args))
    print("\n".join(report(figures)))
    print(f"\n({args.rounds} rounds, {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
