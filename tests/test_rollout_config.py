"""The migration plan schema (`migration.plan`, design §2.7): what parses, and errors that name
the field path (through bridge.config.parse_config, as an operator meets them)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from bridge.config import Config, parse_config
from bridge.errors import ConfigError
from bridge.rollout_config import (
    DistributionGate,
    Gates,
    MaxRateGate,
    NodeMatchGate,
    OutcomeGate,
    Plan,
)

PLAN = "routes.main.migration.plan"

VALID = """
routes:
  main:
    token: t
    voicegateway: {url: "ws://127.0.0.1:9/app"}
    legacy: {url: "http://127.0.0.1:9/bot"}
    migration:
      shadow: true
      plan:
        steps: [5, 25, 50, 100]
        hold: 30m
        min_calls: 150
        evaluate_every: 90s
        dry_run: true
        on_failure: hold
        approve: manual
        pass_score: 0.9
        marginal_score: 0.5
        gates:
          node_match_rate: {min: 0.98, min_samples: 10}
          fallback_rate: {max: 0.05, critical: true}
          ack_timeout_rate: {max: 0.02, weight: 2}
          upstream_error_rate: {max: 0.03}
          turn_latency: {tolerance_ms: 50, alpha: 0.05, max_effect: 0.7}
          time_to_first_prompt: {critical: true, tolerance_ms: 250}
          early_hangup_rate: {critical: true, max_increase: 0.01}
          transfer_rate: {alpha: 0.01}
          no_input_giveup_rate: {}
          error_rate: {min_samples: 50}
"""


def route_doc(
    plan: Any,
    *,
    shadow: bool | None = None,
    voicegateway: bool = True,
    legacy: bool = True,
    **migration: Any,
) -> dict[str, Any]:
    route: dict[str, Any] = {"token": "t"}
    if voicegateway:
        route["voicegateway"] = {"url": "ws://127.0.0.1:9/app"}
    if legacy:
        route["legacy"] = {"url": "http://127.0.0.1:9/bot"}
    mig: dict[str, Any] = dict(migration)
    if shadow is not None:
        mig["shadow"] = shadow
    mig["plan"] = plan
    route["migration"] = mig
    return {"routes": {"main": route}}


def parse(doc: dict[str, Any]) -> Config:
    return parse_config(yaml.safe_dump(doc), env={})


def plan_of(plan: Any, **kwargs: Any) -> Plan:
    found = parse(route_doc(plan, **kwargs)).routes["main"].migration.plan
    assert found is not None
    return found


def config_error(doc: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(doc)
    return info.value


# --- what parses --------------------------------------------------------------------------------


def test_the_full_plan_parses() -> None:
    plan = parse_config(VALID, env={}).routes["main"].migration.plan
    assert plan is not None
    assert plan.steps == [5.0, 25.0, 50.0, 100.0]
    assert plan.hold == 1800.0
    assert plan.evaluate_every == 90.0
    assert (plan.min_calls, plan.dry_run, plan.on_failure, plan.approve) == (
        150,
        True,
        "hold",
        "manual",
    )
    assert (plan.pass_score, plan.marginal_score) == (0.9, 0.5)
    gates = plan.gates
    assert gates is not None
    assert gates.node_match_rate == NodeMatchGate(min=0.98, min_samples=10)
    assert gates.node_match_rate.critical  # critical by default
    assert gates.fallback_rate == MaxRateGate(max=0.05, critical=True)
    assert gates.ack_timeout_rate == MaxRateGate(max=0.02, weight=2)
    assert gates.upstream_error_rate == MaxRateGate(max=0.03)
    assert gates.turn_latency == DistributionGate(tolerance_ms=50, alpha=0.05, max_effect=0.7)
    assert gates.time_to_first_prompt == DistributionGate(critical=True, tolerance_ms=250)
    assert gates.early_hangup_rate == OutcomeGate(critical=True, max_increase=0.01)
    assert gates.transfer_rate == OutcomeGate(alpha=0.01)
    assert gates.no_input_giveup_rate == OutcomeGate()
    assert gates.error_rate == OutcomeGate(min_samples=50)
    assert [name for name, _ in gates.configured()] == list(Gates.model_fields)


def test_defaults_of_a_minimal_plan() -> None:
    plan = plan_of({"steps": [10]})
    assert plan.steps == [10.0]
    assert plan.hold == 1800.0
    assert plan.min_calls == 200
    assert plan.evaluate_every == 60.0
    assert (plan.dry_run, plan.on_failure, plan.approve) == (False, "rollback", "auto")
    assert (plan.pass_score, plan.marginal_score) == (0.95, 0.75)
    assert plan.gates is None


@pytest.mark.parametrize(
    ("hold", "seconds"),
    [
        ("30m", 1800.0),
        ("90s", 90.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        (" 2 m ", 120.0),
        ("45", 45.0),
        (45, 45.0),
        (2.5, 2.5),
        (0, 0.0),
        ("720h", 30 * 86_400.0),  # hold's upper bound is allowed
    ],
)
def test_durations(hold: object, seconds: float) -> None:
    assert plan_of({"steps": [5], "hold": hold}).hold == seconds
    if 0 < seconds <= 86_400:
        assert plan_of({"steps": [5], "evaluate_every": hold}).evaluate_every == seconds


def test_unquoted_yaml_durations() -> None:
    text = VALID.replace("hold: 30m", "hold: 1.5h").replace(
        "evaluate_every: 90s", "evaluate_every: 500ms"
    )
    plan = parse_config(text, env={}).routes["main"].migration.plan
    assert plan is not None
    assert (plan.hold, plan.evaluate_every) == (5400.0, 0.5)


def test_fractional_and_full_steps() -> None:
    assert plan_of({"steps": [0.5, 1, 12.5, 100]}).steps == [0.5, 1.0, 12.5, 100.0]


def test_an_empty_gates_mapping_judges_nothing() -> None:
    plan = plan_of({"steps": [5], "gates": {}})
    assert plan.gates == Gates()
    assert plan.gates_for(shadow=True).configured() == []


def test_gates_for_gives_the_defaults_when_gates_are_left_out() -> None:
    plan = plan_of({"steps": [5]})
    with_shadow = plan.gates_for(shadow=True)
    without = plan.gates_for(shadow=False)
    assert with_shadow == Gates.defaults(shadow=True)
    assert with_shadow.node_match_rate == NodeMatchGate()
    assert without.node_match_rate is None
    names = [name for name, _ in without.configured()]
    assert names == [name for name in Gates.model_fields if name != "node_match_rate"]
    critical = {name for name, gate in with_shadow.configured() if gate.critical}
    assert critical == {
        "node_match_rate",
        "fallback_rate",
        "upstream_error_rate",
        "time_to_first_prompt",
        "early_hangup_rate",
        "error_rate",
    }
    assert with_shadow.fallback_rate is not None and with_shadow.fallback_rate.max == 0.02
    assert with_shadow.ack_timeout_rate is not None and with_shadow.ack_timeout_rate.max == 0.01
    assert with_shadow.time_to_first_prompt is not None
    assert with_shadow.time_to_first_prompt.tolerance_ms == 250.0
    # explicit gates are kept as written, shadow or not
    own = plan_of({"steps": [5], "gates": {"transfer_rate": {}}})
    assert own.gates_for(shadow=True) == own.gates_for(shadow=False) == own.gates


def test_node_match_rate_with_shadow_parses() -> None:
    plan = plan_of({"steps": [5], "gates": {"node_match_rate": {}}}, shadow=True)
    assert plan.gates is not None and plan.gates.node_match_rate == NodeMatchGate()


def test_marginal_equal_to_pass_is_allowed() -> None:
    plan = plan_of({"steps": [5], "pass_score": 0.8, "marginal_score": 0.8})
    assert plan.marginal_score == plan.pass_score == 0.8


# --- errors that name the field -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "path", "reason"),
    [
        (
            {"steps": [5, 5]},
            f"{PLAN}.steps",
            "Value error, steps must increase: steps[1] = 5 is not above steps[0] = 5",
        ),
        (
            {"steps": [5, 25, 10, 100]},
            f"{PLAN}.steps",
            "Value error, steps must increase: steps[2] = 10 is not above steps[1] = 25",
        ),
        ({"steps": [0]}, f"{PLAN}.steps.0", "Input should be greater than 0"),
        ({"steps": [5, 101]}, f"{PLAN}.steps.1", "Input should be less than or equal to 100"),
        ({"steps": [-5, 10]}, f"{PLAN}.steps.0", "Input should be greater than 0"),
        (
            {"steps": []},
            f"{PLAN}.steps",
            "List should have at least 1 item after validation, not 0",
        ),
        ({"steps": list(range(1, 22))}, f"{PLAN}.steps", "List should have at most 20 items"),
        ({"steps": "5"}, f"{PLAN}.steps", "Input should be a valid list"),
        ({}, f"{PLAN}.steps", "Field required"),
        ({"steps": [5], "gates": {"latency": {}}}, f"{PLAN}.gates.latency", "unknown key"),
        (
            {"steps": [5], "gates": {"fallback_rate": {"min": 0.5}}},
            f"{PLAN}.gates.fallback_rate.min",
            "unknown key",
        ),
        (
            {"steps": [5], "gates": {"turn_latency": {"max": 0.5}}},
            f"{PLAN}.gates.turn_latency.max",
            "unknown key",
        ),
        ({"steps": [5], "window": "1h"}, f"{PLAN}.window", "unknown key"),
        (
            {"steps": [5], "marginal_score": 0.9, "pass_score": 0.8},
            PLAN,
            "Value error, marginal_score must not be above pass_score",
        ),
        (
            {"steps": [5], "pass_score": 1.5},
            f"{PLAN}.pass_score",
            "Input should be less than or equal to 1",
        ),
        (
            {"steps": [5], "hold": "30x"},
            f"{PLAN}.hold",
            "Value error, not a duration: '30x' (e.g. 30m, 90s, 1h)",
        ),
        (
            {"steps": [5], "hold": "1d"},
            f"{PLAN}.hold",
            "Value error, not a duration: '1d' (e.g. 30m, 90s, 1h)",
        ),
        (
            {"steps": [5], "hold": "-1s"},
            f"{PLAN}.hold",
            "Value error, not a duration: '-1s' (e.g. 30m, 90s, 1h)",
        ),
        ({"steps": [5], "hold": ""}, f"{PLAN}.hold", "Value error, not a duration: ''"),
        # YAML's `yes`/`on` is not a hold of 1 s
        ({"steps": [5], "hold": True}, f"{PLAN}.hold", "Value error, not a duration: True"),
        ({"steps": [5], "hold": -1}, f"{PLAN}.hold", "Input should be greater than or equal to 0"),
        ({"steps": [5], "hold": "721h"}, f"{PLAN}.hold", "Input should be less than or equal to"),
        ({"steps": [5], "hold": [1]}, f"{PLAN}.hold", "Input should be a valid number"),
        (
            {"steps": [5], "evaluate_every": "0s"},
            f"{PLAN}.evaluate_every",
            "Input should be greater than 0",
        ),
        (
            {"steps": [5], "evaluate_every": "soon"},
            f"{PLAN}.evaluate_every",
            "Value error, not a duration: 'soon'",
        ),
        (
            {"steps": [5], "min_calls": 0},
            f"{PLAN}.min_calls",
            "Input should be greater than or equal to 1",
        ),
        (
            {"steps": [5], "on_failure": "pause"},
            f"{PLAN}.on_failure",
            "Input should be 'rollback' or 'hold'",
        ),
        ({"steps": [5], "approve": "yes"}, f"{PLAN}.approve", "Input should be 'auto' or 'manual'"),
        (
            {"steps": [5], "gates": {"fallback_rate": {"max": 1.5}}},
            f"{PLAN}.gates.fallback_rate.max",
            "Input should be less than or equal to 1",
        ),
        (
            {"steps": [5], "gates": {"ack_timeout_rate": {"weight": 0}}},
            f"{PLAN}.gates.ack_timeout_rate.weight",
            "Input should be greater than 0",
        ),
        (
            {"steps": [5], "gates": {"turn_latency": {"max_effect": 0.4}}},
            f"{PLAN}.gates.turn_latency.max_effect",
            "Input should be greater than or equal to 0.5",
        ),
        (
            {"steps": [5], "gates": {"time_to_first_prompt": {"alpha": 1}}},
            f"{PLAN}.gates.time_to_first_prompt.alpha",
            "Input should be less than 1",
        ),
        (
            {"steps": [5], "gates": {"error_rate": {"min_samples": 0}}},
            f"{PLAN}.gates.error_rate.min_samples",
            "Input should be greater than or equal to 1",
        ),
        (
            {"steps": [5], "gates": {"transfer_rate": None, "early_hangup_rate": 3}},
            f"{PLAN}.gates.early_hangup_rate",
            "Input should be a valid dictionary or instance of OutcomeGate",
        ),
    ],
)
def test_a_bad_plan_names_its_field(plan: dict[str, Any], path: str, reason: str) -> None:
    error = config_error(route_doc(plan))
    assert error.path == path
    assert error.reason.startswith(reason), error.reason
    assert str(error) == f"{path}: {error.reason}"


def test_node_match_rate_needs_the_shadow() -> None:
    for shadow in (None, False):
        error = config_error(
            route_doc({"steps": [5], "gates": {"node_match_rate": {}}}, shadow=shadow)
        )
        assert error.path == "routes.main.migration"
        assert error.reason == (
            "Value error, plan.gates.node_match_rate needs migration.shadow: true "
            "(the shadow comparisons are what it judges)"
        )


def test_a_plan_needs_voicegateway() -> None:
    error = config_error(route_doc({"steps": [5]}, voicegateway=False))
    assert error.path == "routes.main"
    assert error.reason == (
        "Value error, migration.plan moves calls to voicegateway, which is not set"
    )


def test_a_plan_needs_legacy() -> None:
    for percent in (0, 100):
        error = config_error(route_doc({"steps": [5]}, legacy=False, voicegateway_percent=percent))
        assert error.path == "routes.main"
        assert error.reason == (
            "Value error, migration.plan needs a legacy upstream (its calls are the baseline "
            "and where a rollback sends them)"
        )


def test_an_error_in_the_yaml_text_names_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(VALID.replace("hold: 30m", "hold: 30 minutes"), file="bridge.yaml", env={})
    assert info.value.path == f"{PLAN}.hold"
    assert str(info.value).startswith(f"bridge.yaml: {PLAN}.hold: Value error, not a duration")
