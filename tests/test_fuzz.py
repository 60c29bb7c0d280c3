"""Fuzzing, CI-sized: hostile input on every surface keeps each surface's invariants.

The long run is `python -m bench.fuzz --cases 10000`; the strategies and invariants are in
`tests/fuzz/`. The seed corpus (`tests/fuzz/corpus/<surface>/`) holds every case that once broke
something; it is replayed here as explicit hypothesis examples.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from typing import Any

import pytest

from bridge.audiocodes import wire
from tests.fuzz.harness import (
    SURFACES,
    FuzzFailure,
    Guard,
    HttpSurface,
    decode_case,
    encode_case,
    fuzz,
    load_corpus,
    strict_json,
)

# A few hundred cases where a case is cheap; fewer where each is a real call on sockets. The
# seed is fixed so `make test` is stable; `bench.fuzz` explores with fresh seeds.
CI_SEED = 6
CI_EXAMPLES = {
    "http": 150,
    "ac_ws": 200,
    "jambonz": 300,
    "vg_path": 100,
    "config": 300,
    "mapping": 60,
}


@pytest.mark.parametrize("name", sorted(SURFACES))
def test_corpus_replays_clean(name: str) -> None:
    corpus = load_corpus(name)
    assert corpus, f"no seed cases for {name}"
    report = fuzz(SURFACES[name](), 1, corpus=[case for _, case in corpus], generate=False)
    assert report.cases == len(corpus)
    assert report.failures == []


@pytest.mark.parametrize("name", sorted(SURFACES))
def test_generated_cases_keep_the_invariants(name: str) -> None:
    report = fuzz(SURFACES[name](), CI_EXAMPLES[name], random_seed=CI_SEED)
    assert report.cases >= CI_EXAMPLES[name]
    assert report.failures == []


def test_corpus_encoding_round_trips_bytes_and_surrogates() -> None:
    case = {"a": b"\xff\x00", "b": b"{}", "c": ["\ud800", 1.5, None]}
    assert decode_case(strict_json(json.dumps(encode_case(case)))) == case


def test_strict_json_refuses_nan() -> None:
    with pytest.raises(FuzzFailure):
        strict_json('{"a": NaN}')


def test_guard_records_unhandled_task_errors_and_error_logs() -> None:
    async def boom() -> None:
        raise RuntimeError("lost")

    with asyncio.Runner() as runner, Guard(runner.get_loop()) as guard:

        async def scenario() -> None:
            task = asyncio.get_running_loop().create_task(boom())
            await asyncio.sleep(0)
            del task
            logging.getLogger("bridge.test").error("an error record")

        runner.run(scenario())
        gc.collect()
        problems = guard.take()
    assert any("ERROR log bridge.test" in p for p in problems)
    assert any("unhandled in loop" in p for p in problems)


def test_the_http_surface_catches_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness can fail: a route that crashes is reported, with the case."""

    def crash() -> dict[str, object]:
        raise RuntimeError("boom")

    monkeypatch.setattr(wire, "probe_response", crash)
    case: dict[str, Any] = {
        "route": "r",
        "start": None,
        "requests": [
            {
                "op": "probe",
                "method": None,
                "route": "own",
                "conversation": "own",
                "auth": "good",
                "headers": {},
                "body": None,
            }
        ],
    }
    report = fuzz(HttpSurface(), 1, collect=True, corpus=[case], generate=False)
    assert report.cases == 1
    assert len(report.failures) == 1
    assert "500" in report.failures[0][1]
