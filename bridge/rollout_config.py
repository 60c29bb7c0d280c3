"""The schema of a route's migration plan (`migration.plan`, design §2.7): steps, hold, gates.

Validated like the rest of the config (unknown keys and contradictions name the field). What
the gates mean and how a verdict is reached: bridge/gates.py and README "Automatic rollout".
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

__all__ = ["DistributionGate", "Gates", "MaxRateGate", "NodeMatchGate", "OutcomeGate", "Plan"]

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _seconds(value: object) -> object:
    """`30m`, `90s`, `1.5h`, `500ms` or a number of seconds."""
    if isinstance(value, bool):  # pydantic would take YAML's `yes`/`on` as 1 s
        raise ValueError(f"not a duration: {value!r} (e.g. 30m, 90s, 1h)")
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"not a duration: {value!r} (e.g. 30m, 90s, 1h)")
        return float(match.group(1)) * _UNIT_S[match.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(_seconds)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Gate(_Strict):
    critical: bool = False  # failing it decides the verdict alone (on_failure)
    weight: float = Field(default=1.0, gt=0, le=100)  # its share of the score when not critical


class NodeMatchGate(_Gate):
    """Every node's shadow match rate over the step (the console's readiness) at least `min`."""

    critical: bool = True
    min: float = Field(default=0.99, ge=0, le=1)
    min_samples: int = Field(default=20, ge=1)  # comparisons of a node before it is judged


class MaxRateGate(_Gate):
    """A voicegateway rate (fallbacks per call, ack timeouts or upstream errors per turn) at
    most `max`."""

    max: float = Field(default=0.01, ge=0, le=1)
    min_samples: int = Field(default=20, ge=1)  # calls or turns before it is judged


class DistributionGate(_Gate):
    """voicegateway's distribution (turn latency, time to first prompt) against legacy's:
    fails when it is larger with p < `alpha` (Mann-Whitney U, one-sided) and the probability that
    a voicegateway value exceeds a legacy one by more than `tolerance_ms` is above `max_effect`."""

    tolerance_ms: float = Field(default=100.0, ge=0, le=60_000)
    alpha: float = Field(default=0.01, gt=0, lt=1)
    max_effect: float = Field(default=0.6, ge=0.5, le=1)
    min_samples: int = Field(default=20, ge=1)  # values per path before it is judged


class OutcomeGate(_Gate):
    """voicegateway's share of calls with one outcome against legacy's: fails when it is higher
    with p < `alpha` (two-proportion z-test, one-sided) by more than `max_increase`."""

    alpha: float = Field(default=0.05, gt=0, lt=1)
    max_increase: float = Field(default=0.02, ge=0, le=1)
    min_samples: int = Field(default=20, ge=1)  # ended calls per path before it is judged


def _critical_rate(limit: float) -> MaxRateGate:
    return MaxRateGate(critical=True, max=limit)


class Gates(_Strict):
    """The gates a step must pass; the names are the README's list. An absent gate is not
    judged; `gates` left out of a plan gives these defaults (node_match_rate only with
    `migration.shadow`)."""

    node_match_rate: NodeMatchGate | None = None
    fallback_rate: MaxRateGate | None = None
    ack_timeout_rate: MaxRateGate | None = None
    upstream_error_rate: MaxRateGate | None = None
    turn_latency: DistributionGate | None = None
    time_to_first_prompt: DistributionGate | None = None
    early_hangup_rate: OutcomeGate | None = None
    transfer_rate: OutcomeGate | None = None
    no_input_giveup_rate: OutcomeGate | None = None
    error_rate: OutcomeGate | None = None

    @classmethod
    def defaults(cls, *, shadow: bool) -> Gates:
        return cls(
            node_match_rate=NodeMatchGate() if shadow else None,
            fallback_rate=_critical_rate(0.02),
            ack_timeout_rate=MaxRateGate(max=0.01),
            upstream_error_rate=_critical_rate(0.02),
            turn_latency=DistributionGate(),
            time_to_first_prompt=DistributionGate(critical=True, tolerance_ms=250.0),
            early_hangup_rate=OutcomeGate(critical=True),
            transfer_rate=OutcomeGate(),
            no_input_giveup_rate=OutcomeGate(),
            error_rate=OutcomeGate(critical=True),
        )

    def configured(self) -> list[tuple[str, _Gate]]:
        """The gates set, in the README's order."""
        return [
            (name, gate)
            for name in type(self).model_fields
            if (gate := getattr(self, name)) is not None
        ]


class Plan(_Strict):
    steps: list[Annotated[float, Field(gt=0, le=100)]] = Field(min_length=1, max_length=20)
    hold: Duration = Field(default=1800.0, ge=0, le=30 * 86_400)
    min_calls: int = Field(default=200, ge=1)  # voicegateway calls on the step before judging
    # after a `hold` verdict, the next look; the window keeps growing from the step's start
    evaluate_every: Duration = Field(default=60.0, gt=0, le=86_400)
    dry_run: bool = False
    on_failure: Literal["rollback", "hold"] = "rollback"
    approve: Literal["auto", "manual"] = "auto"  # manual: a promotion waits for a person
    # score = weight of the non-critical gates passed / weight of those judged
    pass_score: float = Field(default=0.95, ge=0, le=1)  # at or above: promote
    marginal_score: float = Field(default=0.75, ge=0, le=1)  # below: failure; between: hold
    gates: Gates | None = None

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[float]) -> list[float]:
        for index, (before, after) in enumerate(itertools.pairwise(steps)):
            if after <= before:
                raise ValueError(
                    f"steps must increase: steps[{index + 1}] = {after:g} "
                    f"is not above steps[{index}] = {before:g}"
                )
        return steps

    @model_validator(mode="after")
    def _ordered(self) -> Plan:
        if self.marginal_score > self.pass_score:
            raise ValueError("marginal_score must not be above pass_score")
        return self

    def gates_for(self, *, shadow: bool) -> Gates:
        return self.gates if self.gates is not None else Gates.defaults(shadow=shadow)
