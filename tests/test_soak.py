"""The short soak (bench/soak.py): 40 concurrent callers for a few seconds through a real bridge
process, one fault of each kind (a slow shadow, the VG endpoint killed and restarted, the legacy
endpoint answering 503), and the ledger must hold. Correctness only: no timing is asserted."""

from __future__ import annotations

from bench.soak import Schedule, SoakOptions, report, run_soak

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
