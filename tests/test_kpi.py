"""bridge/kpi.py: each outcome from what the bot and the caller did, the wait for the first
prompt, turns and duration; and through a real bridge, the KPI metrics of simulated calls on
both transports."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.kpi import CallKpi, Outcome
from bridge.metrics import Metrics
from bridge.sim.scenario import load_scenarios, run_scenario
from bridge.sim.vg_endpoint import VGEndpointSim
from tests.conftest import BridgeFactory, route_config

START = {"type": "event", "name": "start", "parameters": {}}
SILENCE = {"type": "event", "name": "noUserInput"}
SPEECH = {"type": "message", "text": "hello"}
PROMPT = {"type": "message", "text": "How can I help you?"}
HANGUP = {"type": "event", "name": "hangup"}
TRANSFER = {"type": "event", "name": "transfer", "activityParams": {"transferTarget": "tel:+1"}}


def call(*steps: tuple[str, float, list[dict[str, Any]]]) -> CallKpi:
    kpi = CallKpi(early_hangup_s=5.0)
    for kind, now, activities in steps:
        if kind == "in":
            kpi.inputs(now, activities)
        else:
            kpi.delivered(now, activities)
    return kpi


@pytest.mark.parametrize(
    ("steps", "end", "reason", "outcome"),
    [
        ([("in", 0, [START]), ("out", 0.4, [PROMPT])], 60, "client_disconnected", "caller_hangup"),
        ([("in", 0, [START]), ("out", 0.4, [PROMPT])], 3, "client_disconnected", "early_hangup"),
        ([("in", 0, [START])], 30, "client_disconnected", "early_hangup"),  # no prompt yet
        (
            [("in", 0, [START]), ("out", 1, [PROMPT, HANGUP])],
            9,
            "client_disconnected",
            "bot_hangup",
        ),
        (
            [("in", 0, [START]), ("out", 1, [PROMPT]), ("in", 6, [SILENCE]), ("out", 7, [HANGUP])],
            9,
            "client_disconnected",
            "no_input_giveup",
        ),
        (
            [
                ("in", 0, [START]),
                ("out", 1, [PROMPT]),
                ("in", 6, [SILENCE]),
                ("in", 9, [SPEECH]),
                ("out", 9.5, [PROMPT, HANGUP]),
            ],
            12,
            "client_disconnected",
            "bot_hangup",
        ),
        ([("in", 0, [START]), ("out", 1, [PROMPT, TRANSFER])], 9, "transferred", "transferred"),
        (
            [("in", 0, [START]), ("out", 1, [PROMPT, TRANSFER])],
            9,
            "client_disconnected",
            "transferred",
        ),
        (  # the transfer failed and the flow went on: the caller hung up later
            [("in", 0, [START]), ("out", 1, [TRANSFER]), ("out", 3, [PROMPT])],
            60,
            "client_disconnected",
            "caller_hangup",
        ),
        ([("in", 0, [START]), ("out", 1, [PROMPT, HANGUP])], 9, "error", "error"),
        ([("in", 0, [START]), ("out", 1, [PROMPT])], 300, "expired", "error"),
        ([("in", 0, [START]), ("out", 1, [PROMPT])], 300, "drained", "error"),
        ([("in", 0, [START]), ("out", 1, [PROMPT])], 300, "bot_disconnected", "bot_hangup"),
    ],
)
def test_outcomes(steps: Any, end: float, reason: str, outcome: str) -> None:
    assert call(*steps).outcome(end, reason) is Outcome(outcome)


def test_a_call_taken_over_elsewhere_counts_its_outcome_only() -> None:
    kpi = call(("in", 100, [SPEECH]), ("out", 101, [PROMPT, HANGUP]))  # no start seen here
    metrics = Metrics()
    kpi.record(metrics, "r", "legacy", 110, "client_disconnected")
    reg = metrics.registry
    sample = reg.get_sample_value
    labels = {"route": "r", "path": "legacy"}
    assert sample("acvg_call_outcomes_total", {**labels, "outcome": "bot_hangup"}) == 1
    assert sample("acvg_time_to_first_prompt_seconds_count", labels) is None
    assert sample("acvg_call_duration_seconds_count", labels) is None


def test_record_observes_the_wait_turns_duration_and_no_inputs() -> None:
    kpi = call(
        ("in", 10, [START]), ("out", 10.75, [PROMPT]), ("in", 15, [SILENCE]), ("out", 16, [PROMPT])
    )
    metrics = Metrics()
    kpi.record(metrics, "r", "voicegateway", 70, "client_disconnected")
    sample = metrics.registry.get_sample_value
    labels = {"route": "r", "path": "voicegateway"}
    assert sample("acvg_time_to_first_prompt_seconds_sum", labels) == pytest.approx(0.75)
    assert sample("acvg_call_turns_sum", labels) == 2
    assert sample("acvg_call_duration_seconds_sum", labels) == pytest.approx(60)
    assert sample("acvg_no_input_events_total", labels) == 1
    assert sample("acvg_call_outcomes_total", {**labels, "outcome": "caller_hangup"}) == 1


SCENARIOS = {s.name: s for s in load_scenarios()}


@pytest.mark.parametrize("transport", ["http", "ws"])
@pytest.mark.parametrize("async_mode", [False, True])
async def test_outcomes_of_simulated_calls(
    bridge_factory: BridgeFactory, transport: Any, async_mode: bool
) -> None:
    async with VGEndpointSim() as vg:
        config = route_config(vg.url(), turn_settle_ms=100, async_mode=async_mode)
        bridge = await bridge_factory(config)
        played = {}
        for name in ("greeting", "hang_up", "transfer_dial"):
            result = await run_scenario(
                SCENARIOS[name],
                bridge.url,
                "tok",
                session=bridge.http,
                route="r",
                transport=transport,
                async_mode=async_mode,
                settle=0.05,
            )
            assert result.passed, result.failure
            played[name] = result
    labels = {"route": "r", "path": "voicegateway"}

    def outcome(name: str) -> float:
        return bridge.metric("acvg_call_outcomes_total", **labels, outcome=name)

    assert outcome("early_hangup") == 1  # greeting: the caller hangs up at once
    assert outcome("bot_hangup") == 2  # hang_up; transfer_dial's failed transfer, then hangup
    assert bridge.metric("acvg_time_to_first_prompt_seconds_count", **labels) == 3
    assert bridge.metric("acvg_call_turns_sum", **labels) == 1 + 2 + 2
    assert 0 < bridge.metric("acvg_time_to_first_prompt_seconds_sum", **labels) < 30
