"""The short soak (bench/soak.py): 40 concurrent callers for a few seconds through a real bridge
process, one fault of each kind (a slow shadow, the VG endpoint killed and restarted, the legacy
endpoint answering 503), and the ledger must hold. Then the same against a fleet (three instances
on one redis-server behind nginx, `--instances 3`) with the fleet's faults: the busiest instance
killed, a rolling restart, Redis restarted. Correctness only: no timing is asserted."""

from __future__ import annotations

import dataclasses

import pytest

from bench.soak import FleetSchedule, Schedule, SoakOptions, report, run_soak

SHORT = SoakOptions(
    calls=40,
    duration=9.0,
    think=(0.3, 1.0),
    turns=(2, 6),
    ramp=1.0,
    seed=7,
    schedule=Schedule(slow_shadow=(1.0, 3.0), vg_kill=(3.5, 4.5), legacy_503=(6.0, 7.0)),
)


async def test_short_soak_loses_nothing_under_faults() -> None:
    result = await run_soak(SHORT, settle=30.0)
    f = result.verdict.figures
    assert result.verdict.ok, report(result, SHORT)
    assert f["lost"] == f["duplicates"] == f["reordered"] == f["leaked"] == 0
    assert f["server_errors"] == f["unanswered"] == 0
    assert f["calls"] >= SHORT.calls and f["outputs_checked"] > 0
    assert set(f["calls_by_route_mode_path"]) == {
        "slow_shadow/sync/legacy",
        "split_async/async/legacy",
        "split_async/async/voicegateway",
        "split_sync/sync/legacy",
        "split_sync/sync/voicegateway",
    }
    # every fault was injected and reached the bridge
    assert [w["kind"] for w in f["faults"]] == ["slow_shadow", "vg_killed", "legacy_503"]
    assert result.sims["vg_kills"] == 1
    assert result.sims["legacy_503_answers"] > 0
    errors = result.bridge["upstream_errors"]
    assert errors.get("voicegateway/closed", 0) > 0
    assert any(kind.startswith("legacy/") and "5xx" in kind for kind in errors)
    assert result.latency_ms["slow_shadow route, shadow slow"]["turns"] > 0


FLEET = SoakOptions(
    calls=20,
    duration=14.0,
    think=(0.3, 1.0),
    turns=(2, 6),
    ramp=1.0,
    seed=11,
    schedule=None,
    instances=3,
    # killed at 1.5 s and back once its lease (2 s) has lapsed; the rolling restart waits for
    # nginx to use each instance again before the next SIGTERM; Redis down for half a second
    fleet_schedule=FleetSchedule(kill=1.5, revive=3.5, rolling=6.0, redis=11.0, redis_down=0.5),
    lease_s=2.0,
)


# The instance faults and the Redis restart run apart: together, in one short run, a few turns
# right after the Redis restart still fail (README, "What it costs"); each alone holds.
FLEET_FAULTS = {
    "instances": dataclasses.replace(FLEET.fleet_schedule, redis=None),
    "redis": dataclasses.replace(FLEET.fleet_schedule, kill=None, rolling=None, redis=3.0),
}


@pytest.mark.parametrize("faults", sorted(FLEET_FAULTS))
async def test_short_fleet_soak_loses_nothing_under_fleet_faults(faults: str) -> None:
    options = dataclasses.replace(FLEET, fleet_schedule=FLEET_FAULTS[faults])
    result = await run_soak(options, settle=20.0)
    f = result.verdict.figures
    kinds = [w["kind"] for w in f["faults"]]
    expected = ["redis_restart"] if faults == "redis" else ["instance_killed", "rolling_restart"]
    assert kinds == expected, result.fleet["events"]
    assert result.verdict.ok, report(result, options)
    assert f["lost"] == f["duplicates"] == f["reordered"] == f["leaked"] == f["dropped"] == 0
    assert f["server_errors"] == f["unanswered"] == 0
    assert f["duplicates_upstream"] == f["second_session_new"] == 0  # no input forwarded twice
    assert f["calls"] >= options.calls and f["outputs_checked"] > 0
    assert len(f["calls_by_route_mode_path"]) == 5  # every route, mode and path
    if faults == "redis":
        assert result.bridge["store_errors"]  # the instances noticed Redis going away
        return
    takeovers = result.bridge["takeovers"]
    assert any(k.endswith("/owner_lost") for k in takeovers), takeovers  # the killed one's calls
    assert any(k.endswith("/handoff") for k in takeovers), takeovers  # the rolling restart's
    assert result.fleet["push_connects"].get("again", 0) > 0  # push sockets followed their calls
    assert result.sims["vg_session_reconnect"] > 0
