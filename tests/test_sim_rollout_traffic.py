"""Simulated rollout traffic against a bridge whose route splits callers 50/50 between the
simulated legacy endpoint and a (possibly slow) simulated Voice Gateway endpoint."""

from __future__ import annotations

from typing import Any

import phonenumbers
import pytest
import yaml
from phonenumbers import PhoneNumberType

from bridge.config import Config, parse_config
from bridge.routing import bucket
from bridge.sim.flow import NodeType, ReplyMode, load_flows
from bridge.sim.recorded import LEGACY_TOKEN, Endpoints
from bridge.sim.rollout_traffic import (
    CallTally,
    caller_numbers,
    place_calls,
    slow_vg,
    support_callee,
)
from tests.conftest import BridgeFactory, RunningBridge

ROUTE = "rollout"
TOKEN = "rollout-token"
CALLS = 40
OUTCOMES = "acvg_call_outcomes_total"
DECISIONS = "acvg_routing_decisions_total"
DELAY_S = 0.25  # the slow VG's lateness: well above the legacy sim's first prompt (~40 ms)
PATIENCE_S = 0.12
FIXED_LINE = (PhoneNumberType.FIXED_LINE, PhoneNumberType.FIXED_LINE_OR_MOBILE)


def rollout_config(endpoints: Endpoints, *, settle_ms: int = 400) -> Config:
    route: dict[str, Any] = {
        "token": TOKEN,
        "default_region": "DE",
        "turn_settle_ms": settle_ms,
        "voicegateway": {"url": endpoints.vg.url()},
        "legacy": {"url": endpoints.legacy.url(), "token": LEGACY_TOKEN},
        # 0: these calls last well under a second; only a caller gone before the first prompt
        # is an early hangup
        "migration": {"voicegateway_percent": 50, "early_hangup_s": 0},
    }
    return parse_config(yaml.safe_dump({"routes": {ROUTE: route}}), env={})


def on_voicegateway(callers: list[str]) -> int:
    """How many of `callers` the route's sticky 50 % puts on voicegateway (bridge/routing.py)."""
    return sum(bucket(ROUTE, caller) < 5000 for caller in callers)


async def call(bridge: RunningBridge, callers: list[str], **options: Any) -> CallTally:
    return await place_calls(
        bridge.url,
        TOKEN,
        ROUTE,
        callers,
        callee=support_callee(),
        session=bridge.http,
        **options,
    )


def outcomes(bridge: RunningBridge, path: str, outcome: str) -> float:
    return bridge.metric(OUTCOMES, route=ROUTE, path=path, outcome=outcome)


async def test_every_call_is_counted_and_both_paths_serve_calls(
    bridge_factory: BridgeFactory,
) -> None:
    callers = caller_numbers(CALLS)
    async with Endpoints() as endpoints:
        bridge = await bridge_factory(rollout_config(endpoints))
        tally = await call(bridge, callers, turns=2, patience_s=1.0)
    assert tally.failures == []
    assert (tally.placed, tally.completed, tally.accounted) == (CALLS, CALLS, CALLS)
    assert tally.answered_turns == 2 * CALLS  # the flow answered every utterance
    assert len(tally.first_prompt_waits) == CALLS
    vg = on_voicegateway(callers)
    assert 0 < vg < CALLS
    assert bridge.metric(DECISIONS, route=ROUTE, path="voicegateway", reason="percent") == vg
    assert bridge.metric(DECISIONS, route=ROUTE, path="legacy", reason="percent") == CALLS - vg
    assert outcomes(bridge, "voicegateway", "caller_hangup") == vg
    assert outcomes(bridge, "legacy", "caller_hangup") == CALLS - vg
    assert outcomes(bridge, "voicegateway", "early_hangup") == 0
    assert outcomes(bridge, "legacy", "early_hangup") == 0


async def test_impatient_callers_hang_up_early_on_a_slow_voicegateway_only(
    bridge_factory: BridgeFactory,
) -> None:
    callers = caller_numbers(CALLS, seed=1)
    async with Endpoints(vg=slow_vg(DELAY_S, accept_at_once=True)) as endpoints:
        bridge = await bridge_factory(rollout_config(endpoints))
        tally = await call(bridge, callers, patience_s=PATIENCE_S)
    vg = on_voicegateway(callers)
    assert tally.failures == []
    assert (tally.impatient, tally.completed, tally.accounted) == (vg, CALLS - vg, CALLS)
    assert outcomes(bridge, "voicegateway", "early_hangup") == vg
    assert outcomes(bridge, "legacy", "early_hangup") == 0
    assert outcomes(bridge, "legacy", "caller_hangup") == CALLS - vg
    assert bridge.metric(DECISIONS, route=ROUTE, path="legacy", reason="fallback") == 0


@pytest.mark.parametrize("accept_at_once", [False, True])
async def test_patient_callers_on_a_slow_voicegateway_hang_up_normally(
    bridge_factory: BridgeFactory, accept_at_once: bool
) -> None:
    callers = caller_numbers(CALLS, seed=2)
    async with Endpoints(vg=slow_vg(DELAY_S, accept_at_once=accept_at_once)) as endpoints:
        bridge = await bridge_factory(rollout_config(endpoints))
        tally = await call(bridge, callers, concurrency=CALLS)
    vg = on_voicegateway(callers)
    assert tally.failures == []
    assert (tally.completed, tally.impatient) == (CALLS, 0)
    assert sum(wait >= DELAY_S for wait in tally.first_prompt_waits) == vg  # the late greetings
    assert len(tally.first_prompt_waits) == CALLS
    for path in ("voicegateway", "legacy"):
        assert outcomes(bridge, path, "early_hangup") == 0
    assert outcomes(bridge, "voicegateway", "caller_hangup") == vg


async def test_impatient_callers_during_a_late_ack_hang_up_early_on_voicegateway(
    bridge_factory: BridgeFactory,
) -> None:
    callers = caller_numbers(CALLS, seed=3)
    async with Endpoints(vg=slow_vg(DELAY_S)) as endpoints:
        bridge = await bridge_factory(rollout_config(endpoints))
        tally = await call(bridge, callers, patience_s=PATIENCE_S)
    vg = on_voicegateway(callers)
    assert (tally.impatient, tally.completed, tally.accounted) == (vg, CALLS - vg, CALLS)
    # gone while the bridge still waited for the session:new ack: the call stays voicegateway's
    assert bridge.metric(DECISIONS, route=ROUTE, path="legacy", reason="fallback") == 0
    assert outcomes(bridge, "voicegateway", "early_hangup") == vg
    assert outcomes(bridge, "legacy", "early_hangup") == 0


async def test_http_errors_are_counted_never_raised(bridge_factory: BridgeFactory) -> None:
    callers = caller_numbers(5)
    async with Endpoints() as endpoints:
        bridge = await bridge_factory(rollout_config(endpoints))
        refused = await place_calls(
            bridge.url, "wrong", ROUTE, callers, callee=support_callee(), session=bridge.http
        )
        unreachable = await place_calls(
            "http://127.0.0.1:9", TOKEN, ROUTE, callers, callee="+4930111000", session=bridge.http
        )
    assert (refused.placed, refused.errors, refused.completed) == (5, 5, 0)
    assert all("401" in failure for failure in refused.failures)
    assert (unreachable.placed, unreachable.errors) == (5, 5)


def test_caller_numbers_are_distinct_valid_german_fixed_lines_per_seed() -> None:
    numbers = caller_numbers(200, seed=7)
    assert len(set(numbers)) == 200
    assert numbers == caller_numbers(200, seed=7)
    assert numbers != caller_numbers(200, seed=8)
    assert caller_numbers(10, seed=7) == numbers[:10]
    for number in [*numbers, *caller_numbers(20, country="+49221")]:
        parsed = phonenumbers.parse(number, None)
        assert phonenumbers.is_valid_number(parsed), number
        assert phonenumbers.region_code_for_number(parsed) == "DE"
        assert phonenumbers.number_type(parsed) in FIXED_LINE
        assert phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == number
    assert all(n.startswith("+4930") and not n.startswith("+49301") for n in numbers)
    with pytest.raises(ValueError):
        caller_numbers(1, country="+3312")


def test_support_callee_reaches_a_flow_that_greets_on_start() -> None:
    flow = load_flows()["support"]
    assert flow.serves(support_callee())
    assert flow.nodes[0].type is NodeType.SAY


def test_slow_vg_delays_acks_or_commands() -> None:
    late_acks = slow_vg(0.3)
    assert (late_acks.reply_delay, late_acks.reply) == (0.3, None)
    late_commands = slow_vg(0.3, accept_at_once=True)
    assert (late_commands.reply_delay, late_commands.command_delay) == (0.0, 0.3)
    assert late_commands.reply is ReplyMode.COMMAND
    with pytest.raises(ValueError):
        slow_vg(-1)
