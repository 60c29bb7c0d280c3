"""TLS toward upstreams: verified by default, against `tls.ca_file` when set, and a failed
verification ends the call cleanly (a hangup to VAIC, an upstream error counted) — for the
legacy bot over https:// and the Voice Gateway endpoint over wss://, each served on 127.0.0.1
with a certificate made for the test (`openssl` command line)."""

from __future__ import annotations

import logging
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge.app import create_app
from bridge.config import TlsSettings
from bridge.errors import ConfigError
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.vg_endpoint import VGEndpointSim
from bridge.tls import build_ssl_context
from tests.conftest import BridgeFactory, RunningBridge
from tests.test_legacy_path import (
    LEGACY_TOKEN,
    SCENARIOS,
    Caller,
    assert_passed,
    make_config,
    play_all,
    total,
)


@dataclass(frozen=True)
class Certificate:
    cert: Path  # self-signed for IP 127.0.0.1: also the CA bundle that trusts it
    key: Path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certificate]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=acvg-bridge test", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    yield Certificate(cert, key)


def server_context(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert, certificate.key)
    return context


@asynccontextmanager
async def serve_tls(app: web.Application, certificate: Certificate) -> AsyncIterator[int]:
    """Serve `app` over TLS on an ephemeral loopback port; yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(certificate))
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def legacy_route(port: int) -> dict[str, Any]:
    return {"legacy": {"url": f"https://127.0.0.1:{port}/", "token": LEGACY_TOKEN}}


def vg_route(port: int) -> dict[str, Any]:
    return {"voicegateway": {"url": f"wss://127.0.0.1:{port}/"}}


async def hangup_on_start(bridge: RunningBridge) -> list[dict[str, Any]]:
    caller = Caller(bridge)
    await caller.create()
    return await caller.step(SCENARIOS["greeting"], 0)


def is_hangup(activities: list[dict[str, Any]]) -> bool:
    return [(a.get("type"), a.get("name")) for a in activities] == [("event", "hangup")]


# ---------------------------------------------------------------- the context


def test_default_context_verifies_certificates_and_host_names() -> None:
    context = build_ssl_context(TlsSettings())
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_ca_file_replaces_the_trust_store(certificate: Certificate) -> None:
    context = build_ssl_context(TlsSettings(ca_file=str(certificate.cert)))
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "acvg-bridge test"),),)
    ]


def test_verify_false_is_logged_as_insecure(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bridge.tls"):
        context = build_ssl_context(TlsSettings(verify=False))
    assert context.verify_mode is ssl.CERT_NONE
    assert not context.check_hostname
    assert any("INSECURE" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("content", [None, "not a certificate\n"], ids=["missing", "not-pem"])
def test_unusable_ca_file_is_a_config_error(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as raised:
        build_ssl_context(TlsSettings(ca_file=str(path)))
    assert raised.value.path == "tls.ca_file"
    with pytest.raises(ConfigError):  # the gateway does not start with it either
        create_app(make_config({"r": legacy_route(1)}, tls={"ca_file": str(path)}))


# ---------------------------------------------------------------- legacy over https://


async def test_legacy_https_with_untrusted_certificate_ends_the_call_cleanly(
    bridge_factory: BridgeFactory, certificate: Certificate
) -> None:
    async with serve_tls(LegacyEndpointSim(token=LEGACY_TOKEN).make_app(), certificate) as port:
        bridge = await bridge_factory(make_config({"r": legacy_route(port)}))
        assert is_hangup(await hangup_on_start(bridge))
    assert total(bridge, "acvg_upstream_errors_total", path="legacy", kind="connect") == 1


async def test_legacy_https_with_ca_file_serves_the_call(
    bridge_factory: BridgeFactory, certificate: Certificate
) -> None:
    sim = LegacyEndpointSim(token=LEGACY_TOKEN)
    async with serve_tls(sim.make_app(), certificate) as port:
        config = make_config({"r": legacy_route(port)}, tls={"ca_file": str(certificate.cert)})
        bridge = await bridge_factory(config)
        assert_passed(await play_all(bridge, [SCENARIOS["greeting"], SCENARIOS["dtmf_menu"]]))
        await sim.stop()
    assert total(bridge, "acvg_upstream_errors_total") == 0


async def test_legacy_https_without_verification_serves_the_call(
    bridge_factory: BridgeFactory, certificate: Certificate
) -> None:
    sim = LegacyEndpointSim(token=LEGACY_TOKEN)
    async with serve_tls(sim.make_app(), certificate) as port:
        bridge = await bridge_factory(make_config({"r": legacy_route(port)}, tls={"verify": False}))
        assert_passed(await play_all(bridge, [SCENARIOS["greeting"]]))
        await sim.stop()


# ---------------------------------------------------------------- Voice Gateway over wss://


async def test_vg_wss_with_untrusted_certificate_ends_the_call_cleanly(
    bridge_factory: BridgeFactory, certificate: Certificate
) -> None:
    sim = VGEndpointSim()
    async with serve_tls(sim.make_app(), certificate) as port:
        bridge = await bridge_factory(make_config({"r": vg_route(port)}))
        assert is_hangup(await hangup_on_start(bridge))
        await sim.stop()
    assert total(bridge, "acvg_upstream_errors_total", path="voicegateway", kind="tls") == 1
    assert not sim.calls  # the app never got session:new


async def test_vg_wss_with_ca_file_serves_the_call(
    bridge_factory: BridgeFactory, certificate: Certificate
) -> None:
    sim = VGEndpointSim()
    async with serve_tls(sim.make_app(), certificate) as port:
        config = make_config({"r": vg_route(port)}, tls={"ca_file": str(certificate.cert)})
        bridge = await bridge_factory(config)
        assert_passed(await play_all(bridge, [SCENARIOS["greeting"], SCENARIOS["dtmf_menu"]]))
        await sim.stop()
    assert total(bridge, "acvg_upstream_errors_total") == 0


def test_tls_config_defaults_and_contradiction() -> None:
    assert make_config({"r": legacy_route(1)}).tls == TlsSettings(ca_file=None, verify=True)
    with pytest.raises(ConfigError) as raised:
        make_config({"r": legacy_route(1)}, tls={"ca_file": "/x.pem", "verify": False})
    assert raised.value.path == "tls"
    with pytest.raises(ConfigError) as raised:
        make_config({"r": legacy_route(1)}, tls={"verify": "sometimes"})
    assert raised.value.path == "tls.verify"
