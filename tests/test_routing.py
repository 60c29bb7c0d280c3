"""Path decisions: single upstream, force, rules, the sticky percentage and its properties."""

from __future__ import annotations

import random
import subprocess
import sys
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import Route, parse_config
from bridge.routing import BUCKETS, Decision, bucket, decide, fallback_decision

VG = {"url": "ws://vg.example/app"}
LEGACY = {"url": "https://legacy.example/bot"}


def _route(**migration: Any) -> Route:
    body = {"token": "t", "voicegateway": VG, "legacy": LEGACY, "migration": migration}
    return parse_config(yaml.safe_dump({"routes": {"r": body}}), env={}).routes["r"]


def _decide(
    route: Route,
    caller: str | None = "+4930123456",
    *,
    name: str = "r",
    callee: str | None = "+4989000000",
    conversation_id: str = "conv-1",
    country: str | None = "DE",
    e164: str | None = None,
) -> Decision:
    return decide(
        name,
        route,
        caller=caller,
        callee=callee,
        conversation_id=conversation_id,
        caller_country=country,
        caller_e164=e164,
    )


callers = st.text(alphabet="+0123456789", min_size=1, max_size=16)
percents = st.integers(min_value=0, max_value=10_000).map(lambda n: n / 100)


def test_golden_buckets_are_stable() -> None:
    # Fixed values: a changed hash would move live callers between paths.
    assert bucket("support", "+4930123456") == 4581
    assert bucket("support", "+12025550100") == 1811
    assert bucket("sales", "+4930123456") == 3770
    assert bucket("r", "conv-1") == 980


def test_buckets_agree_across_processes() -> None:
    code = "from bridge.routing import bucket; print(bucket('support', '+4930123456'))"
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert int(out.stdout) == bucket("support", "+4930123456")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"token": "t", "voicegateway": VG}, "voicegateway"),
        ({"token": "t", "legacy": LEGACY}, "legacy"),
        (
            {"token": "t", "voicegateway": VG, "migration": {"voicegateway_percent": 100}},
            "voicegateway",
        ),
    ],
)
def test_single_upstream(body: dict[str, Any], path: str) -> None:
    route = parse_config(yaml.safe_dump({"routes": {"r": body}}), env={}).routes["r"]
    assert _decide(route) == Decision(path=path, reason="single")  # type: ignore[arg-type]


@given(caller=callers, percent=percents)
def test_force_is_a_kill_switch(caller: str, percent: float) -> None:
    rules = [{"match": {"caller_prefix": ["+"]}, "path": "voicegateway"}]
    route = _route(voicegateway_percent=percent, force="legacy", rules=rules)
    assert _decide(route, caller) == Decision(path="legacy", reason="forced")
    route = _route(voicegateway_percent=percent, force="voicegateway")
    assert _decide(route, caller) == Decision(path="voicegateway", reason="forced")


@given(caller=callers, percent=percents)
def test_matching_rule_beats_percentage(caller: str, percent: float) -> None:
    route = _route(
        voicegateway_percent=percent,
        rules=[{"match": {"caller_prefix": [caller[:1]]}, "path": "legacy"}],
    )
    assert _decide(route, caller) == Decision(path="legacy", reason="rule")


def test_first_matching_rule_wins() -> None:
    route = _route(
        voicegateway_percent=100,
        rules=[
            {"match": {"caller_country": ["US"]}, "path": "legacy"},
            {"match": {"caller_country": ["de"]}, "path": "voicegateway"},
            {"match": {"caller_country": ["DE"]}, "path": "legacy"},
        ],
    )
    assert _decide(route, country="DE") == Decision(path="voicegateway", reason="rule")
    assert _decide(route, country="US") == Decision(path="legacy", reason="rule")
    assert _decide(route, country="FR") == Decision(path="voicegateway", reason="percent")
    assert _decide(route, country=None).reason == "percent"


def test_rule_with_several_keys_needs_all() -> None:
    match = {"caller_country": ["DE"], "caller_prefix": ["+4930"], "callee_prefix": ["+4989"]}
    route = _route(voicegateway_percent=0, rules=[{"match": match, "path": "voicegateway"}])
    assert _decide(route) == Decision(path="voicegateway", reason="rule")
    assert _decide(route, country="AT").reason == "percent"
    assert _decide(route, "+4940123456").reason == "percent"
    assert _decide(route, callee="+4940000000").reason == "percent"
    assert _decide(route, callee=None).reason == "percent"


def test_prefix_uses_e164_when_known_else_raw() -> None:
    route = _route(rules=[{"match": {"caller_prefix": ["+4930"]}, "path": "voicegateway"}])
    assert _decide(route, "030123456", e164="+4930123456").reason == "rule"
    assert _decide(route, "030123456", e164=None).reason == "percent"
    raw = _route(rules=[{"match": {"caller_prefix": ["sip:"]}, "path": "voicegateway"}])
    assert _decide(raw, "sip:alice@example.com").reason == "rule"
    assert _decide(raw, None).reason == "percent"
    callee = _route(rules=[{"match": {"callee_prefix": ["+1"]}, "path": "voicegateway"}])
    got = decide(
        "r",
        callee,
        caller=None,
        callee="2025550100",
        conversation_id="c",
        caller_country=None,
        caller_e164=None,
        callee_e164="+12025550100",
    )
    assert got == Decision(path="voicegateway", reason="rule")


def test_rule_without_keys_matches_every_call() -> None:
    route = _route(voicegateway_percent=100, rules=[{"match": {}, "path": "legacy"}])
    assert _decide(route, None, country=None) == Decision(path="legacy", reason="rule")


@given(caller=callers, conversation=st.text(max_size=20), percent=percents)
def test_sticky_same_inputs_same_decision(caller: str, conversation: str, percent: float) -> None:
    route = _route(voicegateway_percent=percent)
    first = _decide(route, caller, conversation_id=conversation)
    # Another conversation of the same caller takes the same path.
    assert _decide(route, caller, conversation_id=conversation + "x") == first
    assert first.reason == "percent"
    expected = "voicegateway" if bucket("r", caller) < percent * 100 - 1e-9 else "legacy"
    assert first.path == expected


def test_sticky_caller_prefers_e164() -> None:
    route = _route(voicegateway_percent=50)
    one = _decide(route, "030123456", e164="+4930123456")
    assert one == _decide(route, "+4930123456", e164="+4930123456")
    expected = "voicegateway" if bucket("r", "+4930123456") < 5000 else "legacy"
    assert one.path == expected


@given(caller=callers, low=percents, high=percents)
def test_raising_percentage_never_moves_back(caller: str, low: float, high: float) -> None:
    low, high = sorted((low, high))
    before = _decide(_route(voicegateway_percent=low), caller)
    after = _decide(_route(voicegateway_percent=high), caller)
    if before.path == "voicegateway":
        assert after.path == "voicegateway"


@given(caller=callers)
def test_zero_and_hundred_percent(caller: str) -> None:
    assert _decide(_route(voicegateway_percent=0), caller).path == "legacy"
    assert _decide(_route(voicegateway_percent=100), caller).path == "voicegateway"


@pytest.mark.parametrize("anonymous", [None, "", "  ", "anonymous", "Restricted"])
def test_missing_caller_falls_back_to_conversation(anonymous: str | None) -> None:
    route = _route(voicegateway_percent=50)
    for conversation in ("conv-1", "conv-2", "conv-3", "conv-4", "conv-5", "conv-6"):
        got = _decide(route, anonymous, conversation_id=conversation)
        expected = "voicegateway" if bucket("r", conversation) < 5000 else "legacy"
        assert got == Decision(path=expected, reason="percent")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sticky_key", "key"),
    [("caller", "+4930123456"), ("callee", "+4989000000"), ("conversation", "conv-9")],
)
def test_sticky_key_selects_the_hashed_value(sticky_key: str, key: str) -> None:
    route = _route(sticky_key=sticky_key, voicegateway_percent=0.01)
    # Exactly one bucket is on voicegateway; find a route name that puts `key` in it.
    name = next(f"n{i}" for i in range(200_000) if bucket(f"n{i}", key) == 0)
    assert _decide(route, name=name, conversation_id="conv-9").path == "voicegateway"
    others = {"caller": "+4930999999", "callee": "+4989999999", "conversation": "conv-0"}
    moved = {
        "caller": _decide(route, others["caller"], name=name, conversation_id="conv-9"),
        "callee": _decide(route, name=name, callee=others["callee"], conversation_id="conv-9"),
        "conversation": _decide(route, name=name, conversation_id="conv-0"),
    }
    assert moved[sticky_key].path == "legacy"


def test_distribution_is_roughly_uniform() -> None:
    rng = random.Random(20240601)
    route = _route(voicegateway_percent=25)
    callers_ = {"+49" + "".join(rng.choices("0123456789", k=10)) for _ in range(10_000)}
    on_vg = sum(_decide(route, c).path == "voicegateway" for c in callers_)
    assert 0.23 * len(callers_) <= on_vg <= 0.27 * len(callers_)


def test_buckets_cover_the_range() -> None:
    values = {bucket("r", str(i)) for i in range(50_000)}
    assert min(values) >= 0
    assert max(values) < BUCKETS
    assert len(values) > 0.99 * BUCKETS


def test_route_name_changes_the_bucket() -> None:
    keys = [f"+4930{i:06d}" for i in range(200)]
    same = sum(bucket("a", k) == bucket("b", k) for k in keys)
    assert same < 5


def test_fallback_decision() -> None:
    assert fallback_decision() == Decision(path="legacy", reason="fallback")
