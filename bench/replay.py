"""What recording calls to the journal costs the serving path, side by side with recording off,
and how fast `acvg-bridge replay` plays a journal back (issue 15, design §2.6).

Recording: one bridge process at a time (`python -m bridge serve`, its CPU read from /proc), a
route's `record:` block off, then on (`sample_rate: 1.0`, the journal in a temporary directory),
alternating round by round; on the translated path (route `vg`) and on pass-through (route
`pass`). The simulators run in a process of their own (`python -m bench --serve-sims`), the
load in this one. Calls arrive open loop so that turns come at `--rates` turns/s: each call is
created, plays `start`, does a caller turn every `--gap` seconds until it has done
`--turns-per-call` turns (`start` counts as one) and hangs up, so journal lines are written
while later calls are served. The bridge's CPU is read from just before the first call until
every call has hung up and the bridge is idle again (its journal written), and divided by the
turns: a call's create and hang-up are in the figure. Latency is that of the caller turns
after `start`. Drops are `acvg_journal_dropped_total` on the bridge's /metrics.

Replay: a bridge with `record:` on serves `--replay-calls` translated calls; the journal it
wrote is then played back by `acvg-bridge replay JOURNAL --route vg --path voicegateway
--speed 0 --concurrency C` (a process of its own) against the same simulated Voice Gateway
endpoint, once per C and round, alternating; calls/s and turns/s are the report's counts over
its `seconds` (from the journal read to the last call compared: the replay's gateway starting
up is in it, the process's imports are not).

    python -m bench.replay [--quick] [--rates 100,400] [--seconds 10] [--rounds 3]
        [--turns-per-call 5] [--gap 0.2] [--replay-calls 300] [--concurrency 1,8,32]
        [--no-replay] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from bench import loadgen
from bench.__main__ import machine, median, quantile
from bench.configs import TOKEN, bridge_config
from bench.procs import bridge_command, cpu_seconds, free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
ROUTES = {"vg": "voicegateway", "pass": "legacy"}  # bench route -> the path it is forced onto
# The flow both simulators run (loadgen's `support`), chosen by URL: a journal's callee is a
# stand-in for the real number (docs/journal.md, Redaction), so a replayed call could not find
# its flow by number.
FLOW = "support"
_CALL_ERRORS = (OSError, ConnectionClosed, RuntimeError, ValueError)


@dataclass(frozen=True)
class Options:
    rates: tuple[float, ...] = (100.0, 400.0)  # turns/s of the recording phases
    seconds: float = 10.0  # calls arrive over this long
    rounds: int = 3
    turns_per_call: int = 5  # `start` included
    gap_s: float = 0.2  # between the turns of a call
    routes: tuple[str, ...] = ("vg", "pass")
    warmup_calls: int = 20  # per fresh bridge, before its CPU is read
    replay: bool = True
    replay_calls: int = 300
    concurrency: tuple[int, ...] = (1, 8, 32)
    replay_rounds: int = 3


QUICK = Options(
    rates=(40.0,),
    seconds=1.0,
    rounds=1,
    turns_per_call=3,
    gap_s=0.05,
    warmup_calls=2,
    replay_calls=8,
    concurrency=(1, 4),
    replay_rounds=1,
)


@dataclass(frozen=True)
class Process:
    """A server process of the bench and where it listens."""

    proc: subprocess.Popen[bytes]
    base: str

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass(frozen=True)
class Sims:
    process: Process
    vg_port: int
    legacy_port: int


@dataclass
class Driven:
    """What a batch of calls did: calls that got to their hang-up, turns answered, failures, and
    the latency of each caller turn after `start` (seconds)."""

    calls: int = 0
    turns: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.asynccontextmanager
async def sims_running() -> AsyncIterator[Sims]:
    """The simulated legacy bot and Voice Gateway endpoint, in a process of their own."""
    vg_port, legacy_port = free_port(), free_port()
    command = [sys.executable, "-m", "bench", "--serve-sims", str(vg_port), str(legacy_port)]
    proc = subprocess.Popen(command, cwd=ROOT)
    try:
        base = f"http://127.0.0.1:{legacy_port}"
        await wait_http(f"{base}/")  # served after the VG endpoint is up
        yield Sims(Process(proc, base), vg_port, legacy_port)
    finally:
        _stop(proc)


def bridge_doc(sims: Sims, journals: Path | None) -> dict[str, Any]:
    """Routes `vg` and `pass` of the bench's bridge config on the `support` flow; with
    `journals`, each records every call to `journals/<route>.jsonl`."""
    shared = bridge_config(sims.vg_port, sims.legacy_port)["routes"]
    routes: dict[str, Any] = {}
    for name in ROUTES:
        route = dict(shared[name])
        vg_url = f"ws://127.0.0.1:{sims.vg_port}/{FLOW}"
        route["voicegateway"] = {**route["voicegateway"], "url": vg_url}
        route["legacy"] = {**route["legacy"], "url": f"http://127.0.0.1:{sims.legacy_port}/{FLOW}"}
        if journals is not None:
            route["record"] = {"path": str(journals / f"{name}.jsonl"), "sample_rate": 1.0}
        routes[name] = route
    return {"drain_timeout_s": 0, "routes": routes}  # a phase is over: end its calls at once


@contextlib.asynccontextmanager
async def bridge_running(doc: dict[str, Any], workdir: Path) -> AsyncIterator[Process]:
    config = workdir / "bridge.yaml"
    config.write_text(yaml.safe_dump(doc))
    port = free_port()
    proc = subprocess.Popen(bridge_command(config, port))
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/healthz")
        yield Process(proc, base)
    finally:
        _stop(proc)  # SIGTERM: the journal writer writes what is queued, then closes


async def idle(pids: Sequence[int], timeout: float = 10.0) -> None:
    """Until every process in `pids` is idle (below 5 % of a core over 0.2 s): the last calls'
    hang-ups handled and their journal lines written."""
    deadline = time.monotonic() + timeout
    before = [cpu_seconds(pid) for pid in pids]
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = [cpu_seconds(pid) for pid in pids]
        if all(b - a < 0.01 for a, b in zip(before, now, strict=True)):
            return
        before = now


async def journal_dropped(base: str) -> float:
    """`acvg_journal_dropped_total` of a bridge, all routes and reasons."""
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "acvg_journal_dropped_total"
    )


def journal_calls(path: Path) -> tuple[int, int]:
    """(bytes, `call` lines) of a journal; (0, 0) when it does not exist."""
    if not path.exists():
        return 0, 0
    data = path.read_bytes()
    calls = sum(1 for line in data.splitlines() if orjson.loads(line).get("kind") == "call")
    return len(data), calls


async def _sleep_until(due: float) -> None:
    delay = due - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def _call(target: loadgen.Target, due: float, turns: int, gap: float, out: Driven) -> None:
    """One call from `due` on (perf_counter time): create, `start`, caller turns every `gap`
    seconds until `turns`, hang up."""
    await _sleep_until(due)
    call = loadgen.Call(target)
    try:
        await call.start()
        out.turns += 1
        for _ in range(turns - 1):
            due += gap
            await _sleep_until(due)
            sent = time.perf_counter()
            await call.turn()
            out.latencies.append(time.perf_counter() - sent)
            out.turns += 1
    except _CALL_ERRORS:
        out.errors += 1
        await call.close()
        return
    await call.end()
    out.calls += 1


async def open_loop(
    target: loadgen.Target, rate: float, seconds: float, turns: int, gap: float
) -> Driven:
    """Calls arriving every `turns / rate` s for `seconds`: `rate` turns/s once the first calls
    are under way."""
    out = Driven()
    interval = turns / rate
    count = max(1, round(seconds / interval))
    began = time.perf_counter() + 0.05
    await asyncio.gather(
        *(_call(target, began + i * interval, turns, gap, out) for i in range(count))
    )
    return out


async def closed_loop(target: loadgen.Target, calls: int, turns: int, concurrency: int) -> Driven:
    """`calls` calls of `turns` turns back to back, `concurrency` at a time."""
    out = Driven()
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            await _call(target, 0.0, turns, 0.0, out)

    await asyncio.gather(*(one() for _ in range(calls)))
    return out


# ---- recording cost -----------------------------------------------------------------------------


async def recording_phase(
    sims: Sims, route: str, record: bool, rate: float, opts: Options
) -> dict[str, float]:
    """One fresh bridge, `route` with recording off or on, calls at `rate` turns/s."""
    with tempfile.TemporaryDirectory(prefix="acvg-bench-replay-") as name:
        workdir = Path(name)
        async with bridge_running(bridge_doc(sims, workdir if record else None), workdir) as bridge:
            target = loadgen.Target(f"{bridge.base}/ac/{route}", TOKEN)
            warm = await closed_loop(target, opts.warmup_calls, opts.turns_per_call, 8)
            await idle([bridge.pid, sims.process.pid])
            journal = workdir / f"{route}.jsonl"
            size0, lines0 = journal_calls(journal)
            cpu0 = cpu_seconds(bridge.pid)
            driven = await open_loop(target, rate, opts.seconds, opts.turns_per_call, opts.gap_s)
            await idle([bridge.pid])
            cpu = cpu_seconds(bridge.pid) - cpu0
            size1, lines1 = journal_calls(journal)
            dropped = await journal_dropped(bridge.base)
    ms = [1000 * x for x in driven.latencies]
    recorded = lines1 - lines0
    return {
        "calls": driven.calls,
        "turns": driven.turns,
        "errors": warm.errors + driven.errors,
        "cpu_ms_per_turn": 1000 * cpu / max(1, driven.turns),
        "p50_ms": quantile(ms, 0.5),
        "p99_ms": quantile(ms, 0.99),
        "journal_calls": recorded,
        "journal_bytes_per_call": (size1 - size0) / recorded if recorded else 0.0,
        "dropped": dropped,
    }


def _summarised(runs: list[dict[str, float]]) -> dict[str, float]:
    """Medians over rounds; errors and drops summed (each should be 0)."""
    summed = {"errors", "dropped"}
    return {
        key: sum(r[key] for r in runs) if key in summed else median([r[key] for r in runs])
        for key in runs[0]
    }


async def measure_recording(sims: Sims, opts: Options) -> list[dict[str, Any]]:
    """Per (path, rate, record) the medians over `opts.rounds` rounds, off and on alternating."""
    runs: dict[tuple[str, float, bool], list[dict[str, float]]] = {}
    for rnd in range(opts.rounds):
        for rate in opts.rates:
            for route in opts.routes:
                for record in (False, True):
                    figures = await recording_phase(sims, route, record, rate, opts)
                    runs.setdefault((route, rate, record), []).append(figures)
                    print(
                        f"  round {rnd + 1} {ROUTES[route]:>12} {rate:5.0f}/s record "
                        f"{'on ' if record else 'off'}: {figures['cpu_ms_per_turn']:.3f} ms/turn "
                        f"p50 {figures['p50_ms']:.2f} p99 {figures['p99_ms']:.2f} ms",
                        flush=True,
                    )
    rows: list[dict[str, Any]] = []
    for (route, rate, record), found in runs.items():
        rows.append({"path": ROUTES[route], "rate": rate, "record": record, **_summarised(found)})
    for row in rows:
        if row["record"]:
            off = next(
                r
                for r in rows
                if not r["record"] and r["path"] == row["path"] and r["rate"] == row["rate"]
            )
            row["cpu_ratio"] = row["cpu_ms_per_turn"] / off["cpu_ms_per_turn"]
    return rows


# ---- replay throughput --------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    journal: Path
    config: Path  # the same routes, recording off: the replay must not append to its journal
    calls: int
    turns: int
    errors: int
    dropped: float


async def record_journal(sims: Sims, workdir: Path, opts: Options) -> Recorded:
    """`opts.replay_calls` translated calls through a recording bridge, which is then stopped
    (its writer writes every queued call as it closes)."""
    async with bridge_running(bridge_doc(sims, workdir), workdir) as bridge:
        target = loadgen.Target(f"{bridge.base}/ac/vg", TOKEN)
        driven = await closed_loop(target, opts.replay_calls, opts.turns_per_call, 16)
        await idle([bridge.pid])
        dropped = await journal_dropped(bridge.base)
    config = workdir / "replay.yaml"
    config.write_text(yaml.safe_dump(bridge_doc(sims, None)))
    journal = workdir / "vg.jsonl"
    return Recorded(journal, config, driven.calls, driven.turns, driven.errors, dropped)


def replay_command(
    recorded: Recorded, path: str, concurrency: int, report: Path, speed: float = 0.0
) -> list[str]:
    """`acvg-bridge replay` on the recorded journal; `--fail-under 0`: a mismatch is a figure
    here, not a failure (its exit status is then 0 unless the journal or config is bad)."""
    return [
        sys.executable, "-m", "bridge", "--log-level", "WARNING", "replay", str(recorded.journal),
        "--config", str(recorded.config), "--route", "vg", "--path", path,
        "--speed", f"{speed:g}", "--concurrency", str(concurrency), "--report", str(report),
        "--fail-under", "0",
    ]  # fmt: skip


async def replay_run(recorded: Recorded, concurrency: int, report: Path) -> dict[str, float]:
    """One replay at `--speed 0`: its report's counts, its rates and its CPU."""
    command = replay_command(recorded, "voicegateway", concurrency, report)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await proc.communicate()
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"replay exited with {proc.returncode}: {tail}")
    document = json.loads((report / "report.json").read_text())
    summary = document["summary"]
    seconds = float(document["seconds"])
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    turns = float(summary["turns"])
    return {
        "calls": float(summary["calls"]),
        "replayed": float(summary["replayed"]),
        "errors": float(summary["errors"]),
        "turns": turns,
        "turns_matched": float(summary["turns_matched"]),
        "match_rate": float(summary["match_rate"]),
        "seconds": seconds,
        "wall_s": wall,  # the process's start-up and report writing included
        "calls_per_s": float(summary["replayed"]) / seconds if seconds > 0 else 0.0,
        "turns_per_s": turns / seconds if seconds > 0 else 0.0,
        # the replay process's CPU, its start-up (imports, the gateway) included: a short
        # journal is mostly start-up, so no per-turn figure
        "cpu_s": cpu,
    }


async def measure_replay(sims: Sims, opts: Options) -> dict[str, Any]:
    """Record a journal, then replay it at each concurrency, round by round."""
    with tempfile.TemporaryDirectory(prefix="acvg-bench-replay-") as name:
        workdir = Path(name)
        recorded = await record_journal(sims, workdir, opts)
        size, lines = journal_calls(recorded.journal)
        print(
            f"  recorded {lines} calls, {recorded.turns} turns, {size:,} bytes "
            f"({recorded.errors} errors, {recorded.dropped:g} dropped)",
            flush=True,
        )
        runs: dict[int, list[dict[str, float]]] = {}
        for rnd in range(opts.replay_rounds):
            for concurrency in opts.concurrency:
                await idle([sims.process.pid])
                report = workdir / f"report-{concurrency}-{rnd}"
                figures = await replay_run(recorded, concurrency, report)
                runs.setdefault(concurrency, []).append(figures)
                print(
                    f"  round {rnd + 1} concurrency {concurrency:3}: "
                    f"{figures['calls_per_s']:.1f} calls/s {figures['turns_per_s']:.0f} turns/s "
                    f"match {figures['match_rate']:.1%}",
                    flush=True,
                )
    return {
        "journal": {
            "calls": lines,
            "bytes": size,
            "turns": recorded.turns,
            "errors": recorded.errors,
            "dropped": recorded.dropped,
        },
        "runs": [{"concurrency": c, **_summarised(found)} for c, found in runs.items()],
    }


# ---- the run ----------------------------------------------------------------------------------


async def run(opts: Options) -> dict[str, Any]:
    loadgen.raise_fd_limit(4096)
    began = time.monotonic()
    result: dict[str, Any] = {"options": asdict(opts), "machine": machine()}
    async with sims_running() as sims:
        print("recording cost", flush=True)
        result["recording"] = await measure_recording(sims, opts)
        if opts.replay:
            print("replay throughput", flush=True)
            result["replay"] = await measure_replay(sims, opts)
    result["elapsed_s"] = time.monotonic() - began
    return result


def report(result: dict[str, Any]) -> list[str]:
    opts = result["options"]
    lines = [
        f"recording: CPU per turn of a {opts['turns_per_call']}-turn call (create and hang-up "
        f"included), caller-turn latency; medians of {opts['rounds']} rounds",
        f"{'path':12} {'rate':>6} {'record':>6} {'turns':>6} {'CPU ms/turn':>11} {'on/off':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'B/call':>7} {'drops':>5} {'errors':>6}",
    ]
    for row in result["recording"]:
        ratio = f"{row['cpu_ratio']:.2f}x" if "cpu_ratio" in row else ""
        per_call = f"{row['journal_bytes_per_call']:.0f}" if row["record"] else "-"
        lines.append(
            f"{row['path']:12} {row['rate']:6.0f} {'on' if row['record'] else 'off':>6} "
            f"{row['turns']:6.0f} {row['cpu_ms_per_turn']:11.3f} {ratio:>6} "
            f"{row['p50_ms']:7.2f} {row['p99_ms']:7.2f} {per_call:>7} "
            f"{row['dropped']:5.0f} {row['errors']:6.0f}"
        )
    replayed = result.get("replay")
    if replayed is not None:
        journal = replayed["journal"]
        lines += [
            "",
            f"replay at --speed 0 of {journal['calls']} recorded calls ({journal['turns']} "
            f"turns, {journal['bytes']:,} bytes); medians of {opts['replay_rounds']} rounds",
            f"{'concurrency':>11} {'calls/s':>8} {'turns/s':>8} {'seconds':>8} {'CPU s':>6} "
            f"{'match':>7} {'errors':>6}",
        ]
        for run_ in replayed["runs"]:
            lines.append(
                f"{run_['concurrency']:11} {run_['calls_per_s']:8.1f} {run_['turns_per_s']:8.0f} "
                f"{run_['seconds']:8.2f} {run_['cpu_s']:6.2f} "
                f"{run_['match_rate']:7.1%} {run_['errors']:6.0f}"
            )
    lines.append(f"in {result['elapsed_s']:.0f} s")
    return lines


def _no_nan(value: Any) -> Any:
    """`value` with every NaN (a percentile of no values) as null: strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def _numbers(text: str, kind: type[float] | type[int]) -> tuple[Any, ...]:
    return tuple(kind(part) for part in text.split(",") if part)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few calls, short phases")
    parser.add_argument("--rates", help="turns/s of the recording phases, comma-separated")
    parser.add_argument("--seconds", type=float, help="calls arrive over this long, per phase")
    parser.add_argument("--rounds", type=int, help="recording: off and on, this many times")
    parser.add_argument("--turns-per-call", type=int, help="a call's turns, `start` included")
    parser.add_argument("--gap", type=float, help="seconds between the turns of a call")
    parser.add_argument("--replay-calls", type=int, help="calls in the replayed journal")
    parser.add_argument("--concurrency", help="replay --concurrency values, comma-separated")
    parser.add_argument("--no-replay", action="store_true", help="the recording cost only")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    opts = QUICK if args.quick else Options()
    changes: dict[str, Any] = {}
    if args.rates:
        changes["rates"] = _numbers(args.rates, float)
    if args.concurrency:
        changes["concurrency"] = _numbers(args.concurrency, int)
    for key in ("seconds", "rounds", "turns_per_call", "replay_calls"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.gap is not None:
        changes["gap_s"] = args.gap
    if args.rounds is not None:
        changes["replay_rounds"] = args.rounds
    if args.no_replay:
        changes["replay"] = False
    opts = replace(opts, **changes)
    result = asyncio.run(run(opts))
    print("\n".join(report(result)))
    if args.json is not None:
        text = json.dumps(_no_nan(result), indent=1, allow_nan=False)
        args.json.write_text(text + "\n")
    failed = sum(r["errors"] + r["dropped"] for r in result["recording"])
    if "replay" in result:
        journal = result["replay"]["journal"]
        failed += journal["errors"] + journal["dropped"]
        failed += sum(r["errors"] for r in result["replay"]["runs"])
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
