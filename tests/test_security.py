"""Secrets and personal data stay out of logs and the divergence log (design §3.7, style.md).

Every shipped scenario runs end to end with shadow on (a divergent legacy bot, so the
divergence log gets entries), over HTTP and WebSocket mode, with DEBUG logging captured through
the bridge's own handler; calls to a dead upstream, rejected requests and admin requests run too.
Then neither the captured log nor the divergence log may contain the route token, the legacy
token, the admin token, the secret parts of the upstream URLs, the caller's or callee's number
(in any form) or the multi-digit DTMF strings of the calls. Rejections never echo the presented
token.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge.logs import configure_logging
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.scenario import Scenario, ScenarioResult, Transport, run_scenario
from bridge.sim.vg_endpoint import VGEndpointSim
from bridge.transport.vg import UpstreamConnectError, open_socket
from tests.conftest import BridgeFactory, RunningBridge
from tests.test_legacy_path import SCENARIOS, assert_passed, eventually, make_config, total

ROUTE_TOKEN = "rt-Kq7Vw2Lp9Xs4"
LEGACY_TOKEN = "lt-Hd3Nf8Rz1Cm6"
ADMIN_TOKEN = "at-Pb5Yg2Tj7Qe9"
WRONG_TOKEN = "wt-Zu4Mc8Ka3Lo1"
VG_SECRET = "vgs-Ew6Rt1Yu8Io3"
LEGACY_SECRET = "lgs-As9Df2Gh5Jk7"
DEAD_SECRET = "dds-Qw3Er7Ty2Ui6"
SECRETS = [ROUTE_TOKEN, LEGACY_TOKEN, ADMIN_TOKEN, WRONG_TOKEN, VG_SECRET, LEGACY_SECRET]
SECRETS.append(DEAD_SECRET)

_UUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def personal_data() -> set[str]:
    """Every caller and callee number (E.164 digits, national significant digits, with the
    leading 0) and every multi-digit DTMF string of the shipped scenarios."""
    found: set[str] = set()
    for scenario in SCENARIOS.values():
        for number in (scenario.caller, scenario.callee):
            digits = re.sub(r"\D", "", number)
            national = digits[2:]  # every scenario number is +49
            found |= {number, digits, national, "0" + national}
        for step in scenario.steps:
            if step.kind.value == "dtmf" and len(str(step.arg)) > 1:
                found.add(str(step.arg))
    found.add("1234")  # the send_dtmf flow's digits, which VAIC receives as an output
    return found


def leaks(text: str) -> list[str]:
    """Each line of `text` holding a secret or personal data, with what it holds. UUIDs
    (conversation ids, call sids, activity ids) are cut out first: their hex digits can spell
    a short digit string by chance."""
    needles = [*SECRETS, *personal_data()]
    found: list[str] = []
    for line in _UUID.sub("<uuid>", text).splitlines():
        hits = [needle for needle in needles if needle in line]
        if hits:
            found.append(f"{hits}: {line}")
    return found


@pytest.fixture
def captured_log() -> Iterator[io.StringIO]:
    """DEBUG logging through the bridge's handler into a string (the CLI's setup)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    # Other tests (the demo) quieten these loggers for the whole process: undo that here.
    quietened = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and name.startswith(("bridge", "aiohttp"))
    }
    for name in quietened:
        logging.getLogger(name).setLevel(logging.NOTSET)
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    yield stream
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, old in quietened.items():
        logging.getLogger(name).setLevel(old)


@asynccontextmanager
async def quiet(app: web.Application) -> AsyncIterator[int]:
    """Serve a simulator without an access log (its request lines are not the bridge's)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def play(
    bridge: RunningBridge,
    route: str,
    transport: Transport,
    async_mode: bool,
    scenarios: list[Scenario],
) -> list[ScenarioResult]:
    return list(
        await asyncio.gather(
            *(
                run_scenario(
                    scenario,
                    bridge.url,
                    ROUTE_TOKEN,
                    session=bridge.http,
                    transport=transport,
                    async_mode=async_mode,
                    route=route,
                    settle=0.05,
                    push_wait=0.5,
                )
                for scenario in scenarios
            )
        )
    )


async def rejections(bridge: RunningBridge) -> list[str]:
    """Requests that are refused; returns the response bodies."""
    bodies: list[str] = []
    attempts: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "/ac/shadowed", {"Authorization": f"Bearer {WRONG_TOKEN}"}),
        ("POST", "/ac/shadowed", {"Authorization": f"Bearer {WRONG_TOKEN}"}),
        ("POST", "/ac/shadowed", {"Authorization": WRONG_TOKEN}),
        ("GET", f"/ac/shadowed?token={WRONG_TOKEN}", {}),
        ("GET", f"/ac/shadowed?access_token={ROUTE_TOKEN}", {}),
        ("GET", "/admin/routes", {"Authorization": f"Bearer {WRONG_TOKEN}"}),
        ("POST", "/admin/reload", {"Authorization": f"Bearer {ROUTE_TOKEN}"}),
    ]
    for method, path, headers in attempts:
        async with bridge.http.request(method, bridge.url + path, headers=headers) as resp:
            assert resp.status == 401, (method, path)
            bodies.append(await resp.text())
    return bodies


@pytest.mark.parametrize(
    ("transport", "async_mode"), [("http", False), ("ws", True)], ids=["http-sync", "ws-async"]
)
async def test_no_secret_or_personal_data_in_logs_or_divergence_log(
    bridge_factory: BridgeFactory,
    captured_log: io.StringIO,
    tmp_path: Path,
    transport: Transport,
    async_mode: bool,
) -> None:
    divergence = tmp_path / "divergence.jsonl"
    everything = list(SCENARIOS.values())
    legacy = LegacyEndpointSim(token=LEGACY_TOKEN, divergent=True)
    vg = VGEndpointSim()
    async with quiet(legacy.make_app()) as legacy_port, quiet(vg.make_app()) as vg_port:
        legacy_up = {"url": f"http://127.0.0.1:{legacy_port}/?k={LEGACY_SECRET}"}
        routes: dict[str, dict[str, Any]] = {
            "shadowed": {
                "token": ROUTE_TOKEN,
                "async_mode": async_mode,
                "default_region": "DE",
                "legacy": {**legacy_up, "token": LEGACY_TOKEN},
                "voicegateway": {"url": f"ws://127.0.0.1:{vg_port}/?k={VG_SECRET}"},
                "migration": {"voicegateway_percent": 100, "shadow": True},
            },
            "dead": {  # nothing listens: every call fails to start and is logged
                "token": ROUTE_TOKEN,
                "async_mode": async_mode,
                "voicegateway": {"url": f"ws://127.0.0.1:1/{DEAD_SECRET}?k={DEAD_SECRET}"},
            },
        }
        config = make_config(
            routes, admin_token=ADMIN_TOKEN, divergence_log={"path": str(divergence)}
        )
        bridge = await bridge_factory(config)
        assert_passed(await play(bridge, "shadowed", transport, async_mode, everything))
        await play(bridge, "dead", transport, async_mode, [SCENARIOS["dtmf_menu"]])
        await eventually(
            lambda: (
                total(bridge, "acvg_calls_ended_total", route="shadowed", role="shadow")
                >= len(SCENARIOS)
            )
        )
        bodies = await rejections(bridge)
        async with bridge.http.get(
            bridge.url + "/admin/routes", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as resp:
            assert resp.status == 200
            bodies.append(await resp.text())
        await legacy.stop()
        await vg.stop()

    log_text = captured_log.getvalue()
    # the capture is real: DEBUG records of the bridge with call context, access log lines,
    # the dead upstream's failures and rejected requests
    assert "bridge." in log_text and "conversation=" in log_text
    assert "aiohttp.access" in log_text and "/ac/shadowed" in log_text
    assert "could not start the call (connect)" in log_text
    assert total(bridge, "acvg_upstream_errors_total", route="dead") == 1
    assert divergence.read_text().strip(), "no divergence was logged"

    assert leaks(log_text) == []
    assert leaks(divergence.read_text()) == []
    assert leaks("\n".join(bodies)) == []


async def test_rejections_do_not_echo_the_presented_token(bridge_factory: BridgeFactory) -> None:
    config = make_config(
        {"r": {"token": ROUTE_TOKEN, "voicegateway": {"url": "ws://127.0.0.1:1/"}}},
        admin_token=ADMIN_TOKEN,
    )
    bridge = await bridge_factory(config)
    for path in ("/ac/r", f"/ac/r/conversation/{uuid.uuid4()}/activities", "/admin/reload"):
        for header in (f"Bearer {WRONG_TOKEN}", WRONG_TOKEN, f"Bearer {ROUTE_TOKEN[:-1]}"):
            async with bridge.http.post(
                bridge.url + path, json={}, headers={"Authorization": header}
            ) as resp:
                assert resp.status == 401
                text = await resp.text()
                assert "auth" in text
                assert WRONG_TOKEN not in text and ROUTE_TOKEN[:-1] not in text
                assert not [v for v in resp.headers.values() if WRONG_TOKEN in v]


async def test_upstream_connect_errors_do_not_carry_the_url() -> None:
    """The Voice Gateway URL's path and query are often the endpoint's secret."""
    for url in (f"ws://:99999/{VG_SECRET}", f"ws://127.0.0.1:1/{VG_SECRET}?k={VG_SECRET}"):
        with pytest.raises(UpstreamConnectError) as raised:
            await open_socket(url, timeout_s=1)
        rendered = "".join(traceback.format_exception(raised.value))
        assert VG_SECRET not in rendered, rendered
