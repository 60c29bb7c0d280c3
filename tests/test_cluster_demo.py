"""`acvg-bridge demo --cluster` as people run it: a subprocess that starts redis-server, three
instances and nginx, kills the busiest instance and restarts another mid-run, and ends with
every call finished; everything it started is gone when it exits, also after Ctrl-C or SIGTERM.
Without nginx or redis-server it stops at once with one line naming what to install."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.sim.cluster_demo import (
    CallResult,
    Figures,
    Ledger,
    Upstreams,
    call_script,
    parse_figures,
    upstreams,
    verdict,
)
from bridge.sim.fleet import ROOT
from bridge.sim.flow import FlowOptions
from bridge.sim.legacy_endpoint import LegacyCall, LegacyEndpointSim
from bridge.sim.vg_endpoint import SimCall, VGEndpointSim

CALLS = 6
TURNS = len(call_script()[1])
RUN_TIMEOUT_S = 120
SCENARIO = call_script()[0]
PHONE_NUMBER = re.compile(r"\+\d{6,}")


def _demo(tmp: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """The demo as a subprocess whose temporary directories all go under `tmp`."""
    tmp.mkdir(parents=True, exist_ok=True)
    environ = {**os.environ, "TMPDIR": str(tmp), **env}
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "demo", "--cluster", *args],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ports(transcript: str) -> list[int]:
    """Every loopback port the topology lines name (redis-server, instances, nginx, sims)."""
    topology = transcript.split("\n\n", 1)[0]
    return [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", topology)]


def _assert_all_gone(tmp: Path, transcript: str) -> None:
    """Nothing the demo started is left: no process names its temporary directory, no port of
    its topology still accepts connections, and the directory itself is removed."""
    leftovers = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        if str(tmp) in text:
            leftovers.append(text)
    assert leftovers == []
    ports = _ports(transcript)
    assert len(ports) == 7, transcript  # redis-server, 3 instances, nginx, 2 simulators
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    assert list(tmp.iterdir()) == []


def test_a_kill_and_a_restart_mid_run_and_every_call_finishes(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    began = time.monotonic()
    process = _demo(tmp, "--calls", str(CALLS))
    out, err = process.communicate(timeout=RUN_TIMEOUT_S)
    seconds = time.monotonic() - began
    assert process.returncode == 0, out + err
    lines = out.splitlines()

    # the topology: the shipped nginx conf in front of three instances on one redis-server
    assert re.search(r"^  redis-server +redis://127\.0\.0\.1:\d+/0", out, re.M)
    for name in ("a", "b", "c"):
        assert re.search(rf"^  instance {name} +http://127\.0\.0\.1:\d+ \(pid \d+\)", out, re.M)
    assert re.search(r"^  nginx .*\(deploy/nginx/acvg-bridge\.conf\) -> a, b, c$", out, re.M)

    # the kill: the instance /admin/cluster (through nginx) said held the most calls
    kill_at = next(i for i, line in enumerate(lines) if "kill: SIGKILL instance" in line)
    killed = re.search(r"SIGKILL instance (\w) .*held the most calls \((\d+)\)", lines[kill_at])
    assert killed is not None
    victim, held = killed[1], int(killed[2])
    status = re.findall(r"(\w) (\d+) calls?\b", lines[kill_at - 1])
    assert "GET /admin/cluster (through nginx): store ok" in lines[kill_at - 1]
    assert held > 0 and held == max(int(count) for _, count in status)
    assert dict(status)[victim] == str(held)

    # the restart of another instance: SIGTERM, a clean exit, up again
    stop_at = next(i for i, line in enumerate(lines) if "restart: SIGTERM instance" in line)
    restarted = re.search(r"SIGTERM instance (\w) ", lines[stop_at])
    assert restarted is not None and restarted[1] != victim
    name = restarted[1]
    exit_at = next(i for i, line in enumerate(lines) if f"instance {name} exited (code 0)" in line)
    up_at = next(i for i, line in enumerate(lines) if f"instance {name} is up again" in line)
    assert kill_at < stop_at < exit_at < up_at

    # every call finished with every turn answered; both phases came while calls were running
    finished = [i for i, line in enumerate(lines) if re.search(r"\] call \d\d ", line)]
    assert len(finished) == CALLS
    assert kill_at < min(finished) and up_at < max(finished)
    for n in range(1, CALLS + 1):
        line = next(lines[i] for i in finished if f"] call {n:02d} " in lines[i])
        assert f"finished, {TURNS}/{TURNS} turns answered" in line, line
        assert "NOT finished" not in line and "cut:" not in line
    totals = f"calls finished {CALLS}/{CALLS}, turns answered {CALLS * TURNS}/{CALLS * TURNS}"
    assert f"{totals}, turns cut 0" in out

    # the takeovers the instances counted: the killed one's calls and the restarted one's
    takeovers = re.search(r"acvg_takeovers_total, summed over the instances\): (\d+) \((.*)\)", out)
    assert takeovers is not None, out
    by_reason = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", takeovers[2])}
    assert by_reason.get("owner_lost", 0) >= 1 and by_reason.get("handoff", 0) >= 1, out
    assert int(takeovers[1]) == sum(by_reason.values())
    assert re.search(r"Voice Gateway app: \d+ calls .*, 0 started twice", out)
    assert re.search(rf"upstream calls ended .*: primary {CALLS}/{CALLS}, shadow", out)
    assert lines[-1] == "cluster demo held: every call finished, every turn answered"

    assert PHONE_NUMBER.search(out) is None
    for number in (SCENARIO.caller, SCENARIO.callee):
        assert number.lstrip("+") not in out
    _assert_all_gone(tmp, out)
    print(f"cluster demo with {CALLS} calls: {seconds:.1f} s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_demo_stops_everything_it_started(
    tmp_path: Path, sig: signal.Signals
) -> None:
    tmp = tmp_path / "tmp"
    process = _demo(tmp, "--calls", str(CALLS))
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    for line in process.stdout:  # interrupted right after the kill: calls are in flight
        seen.append(line)
        if "kill: SIGKILL instance" in line or time.monotonic() > deadline:
            break
    assert any("kill: SIGKILL" in line for line in seen), "".join(seen)
    process.send_signal(sig)
    rest, err = process.communicate(timeout=60)
    out = "".join(seen) + rest
    assert process.returncode == 130, out + err
    assert "cluster demo interrupted: everything it started is stopped" in err
    assert "cluster demo held" not in out
    _assert_all_gone(tmp, out)


def _path_with(tmp_path: Path, *programs: str) -> str:
    """A PATH holding only `programs` (symlinks to the real ones)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for program in programs:
        found = shutil.which(program)
        assert found is not None, f"{program} is needed for this test"
        (folder / program).symlink_to(found)
    return str(folder)


@pytest.mark.parametrize(
    ("present", "named"),
    [(("redis-server",), "nginx"), ((), "redis-server and nginx")],
    ids=["no-nginx", "neither"],
)
def test_missing_peers_exit_2_with_one_line(
    tmp_path: Path, present: tuple[str, ...], named: str
) -> None:
    path = _path_with(tmp_path, *present)
    process = _demo(tmp_path / "tmp", PATH=path, ACVG_NGINX=str(tmp_path / "no-nginx"))
    out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert out == ""
    assert err.splitlines() == [
        f"acvg-bridge demo --cluster needs {named}: install "
        f"{'them' if ' and ' in named else 'it'} with tools/ensure_system_peers "
        f"(or: sudo apt-get install -y {named.replace(' and ', ' ')})"
    ]


def test_the_verdict_names_every_call_and_turn_that_did_not_make_it() -> None:
    fine = CallResult(1, "support", TURNS, answered=TURNS, finished=True)
    assert verdict([fine, fine], killed=True, restarted=True) == []
    cut = CallResult(2, "support", TURNS, answered=TURNS - 1, cut=["turn 3 answered 503"])
    cut.finished = True
    lost = CallResult(3, "support_legacy", TURNS, answered=2, failure="create answered 502")
    assert verdict([fine, cut, lost], killed=True, restarted=False) == [
        "1 of 3 calls did not finish",
        f"{TURNS - 1} of {3 * TURNS} turns were not answered",  # one cut, TURNS - 2 not played
        "the calls ended before an instance was restarted",
    ]
    assert "cut: turn 3 answered 503" in cut.render()
    assert "NOT finished (create answered 502), 2/" in lost.render()


def test_takeovers_are_summed_over_every_life_of_every_instance() -> None:
    def figures(owner_lost: float, handoff: float) -> Figures:
        return parse_figures(
            "# TYPE acvg_takeovers_total counter\n"
            f'acvg_takeovers_total{{route="r",path="legacy",reason="owner_lost"}} {owner_lost}\n'
            f'acvg_takeovers_total{{route="r",path="legacy",reason="handoff"}} {handoff}\n'
        )

    ledger = Ledger()
    ledger.seen("a", figures(1, 0))
    ledger.seen("b", figures(2, 0))
    ledger.seen("b", figures(3, 0))  # later scrape of the same life replaces the earlier one
    ledger.retire("b")  # killed: its last scrape is kept
    ledger.seen("b", figures(0, 4))  # started again, counters from zero
    assert ledger.total().takeovers == {"owner_lost": 4.0, "handoff": 4.0}


def test_upstream_calls_count_as_ended_on_the_path_that_served_them() -> None:
    def vg_call(conversation: str, *statuses: str) -> SimCall:
        call = SimCall(conversation, "support", FlowOptions(), "ws.jambonz.org")
        customer = {"audiocodes": {"vaigConversationId": conversation}}
        call.received.append({"type": "session:new", "data": {"customerData": customer}})
        for status in statuses:
            call.received.append({"type": "call:status", "data": {"call_status": status}})
        return call

    def legacy_call(conversation: str, *, ended: bool) -> LegacyCall:
        call = LegacyCall(conversation, None, False, 0.0)
        if ended:
            call.ended.set()
        return call

    results = [  # call 1 served by voicegateway, call 2 by legacy; each shadowed on the other
        CallResult(1, "support", TURNS, conversation_id="c1", answered=TURNS, finished=True),
        CallResult(2, "support_legacy", TURNS, conversation_id="c2", answered=TURNS, finished=True),
    ]
    vg, legacy = VGEndpointSim(), LegacyEndpointSim()
    vg.calls = {"s1": vg_call("c1", "in-progress", "completed"), "s2": vg_call("c2", "in-progress")}
    legacy.calls = {"c1": legacy_call("c1", ended=False), "c2": legacy_call("c2", ended=True)}
    assert upstreams(results, vg, legacy) == Upstreams(primary_ended=2, shadow_ended=0, calls=2)
    legacy.calls["c2"] = legacy_call("c2", ended=False)  # the legacy primary never hung up
    vg.calls["s2"] = vg_call("c2", "in-progress", "completed")  # its shadow did
    assert upstreams(results, vg, legacy) == Upstreams(primary_ended=1, shadow_ended=1, calls=2)
