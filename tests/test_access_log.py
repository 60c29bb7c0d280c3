"""The access log of `serve` (bridge/access_log.py): one short line per request with method,
kind, status, duration, route and conversation; nothing a caller sent; nothing formatted when
its logger is off for INFO; `--no-access-log` turns it off."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.access_log import AccessLogger, kind_of, runner_options
from bridge.app import create_app
from bridge.cli import build_parser
from bridge.config import Config
from bridge.transport.http_errors import JsonErrorRunner
from tests.conftest import logging_into, route_config

CALLER = "+4921154591991"
SECRET = "s3cr3t-Tok"
AGENT = f"Bot/7.3.1 (caller {CALLER})"
LEAKS = (CALLER[1:], "21154591991", SECRET, "Bot/", "caller")
ACCESS = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO aiohttp\.access "
    r"(?P<method>[A-Z]+) (?P<kind>[a-z]+) status=(?P<status>\d{3}) ms=(?P<ms>\d+\.\d)"
    r"(?P<context>(?: [a-z_]+=\S+)*)$"
)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    with logging_into("INFO") as stream:
        yield stream


@asynccontextmanager
async def serving(config: Config, access_log: bool = True) -> AsyncIterator[str]:
    """The gateway behind the runner `serve` builds (bridge/cli.py `_run`); yields its URL."""
    runner = JsonErrorRunner(create_app(config), **runner_options(access_log))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def access_lines(text: str) -> list[re.Match[str]]:
    lines = [line for line in text.splitlines() if " aiohttp.access " in line]
    matches = [ACCESS.match(line) for line in lines]
    assert all(matches), lines
    return [m for m in matches if m is not None]


def summary(match: re.Match[str]) -> str:
    """A line without its time and duration: `POST activities 200 route=r conversation=…`."""
    return f"{match['method']} {match['kind']} {match['status']}{match['context']}"


async def test_one_line_per_request_with_kind_status_route_and_conversation(
    log_stream: io.StringIO,
) -> None:
    cid = str(uuid.uuid4())
    auth = {"Authorization": "Bearer tok"}
    conv = f"/ac/r/conversation/{cid}"
    async with (
        serving(route_config("ws://127.0.0.1:1/nothing")) as url,
        aiohttp.ClientSession(headers=auth) as http,
    ):
        requests: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", "/healthz", None),
            ("GET", "/readyz", None),
            ("GET", "/ac/r", None),
            ("POST", "/ac/r", {"conversation": cid}),
            ("POST", f"{conv}/activities", {"activities": []}),
            ("POST", f"{conv}/refresh", {"conversation": cid}),
            ("POST", f"{conv}/disconnect", {"conversation": cid}),
            ("POST", f"{conv}/activities", {"activities": []}),
            ("GET", "/metrics", None),
            ("GET", "/admin/routes", None),
            ("GET", "/nowhere", None),
        ]
        for method, path, body in requests:
            async with http.request(method, url + path, json=body) as reply:
                await reply.read()
        async with http.ws_connect(f"{url}/ac/r") as ws:  # WebSocket (streaming) mode
            await ws.close()
    assert [summary(m) for m in access_lines(log_stream.getvalue())] == [
        "GET healthz 200",
        "GET readyz 200",
        "GET probe 200 route=r",
        "POST create 200 route=r",
        f"POST activities 200 route=r conversation={cid}",
        f"POST refresh 200 route=r conversation={cid}",
        f"POST disconnect 200 route=r conversation={cid}",
        f"POST activities 404 route=r conversation={cid}",
        "GET metrics 200",
        "GET admin 403",  # no admin_token configured: the admin API is disabled
        "GET unmatched 404",
        "GET stream 101 route=r",  # ms: how long the socket was open
    ]


async def test_nothing_a_caller_sent_reaches_the_line(log_stream: io.StringIO) -> None:
    """Query strings, bodies, Authorization and User-Agent are never read; a path's route or
    conversation that is not a configured route or a UUID is not echoed."""
    headers = {"Authorization": f"Bearer {SECRET}", "User-Agent": AGENT}
    start = {"type": "event", "name": "start", "parameters": {"caller": CALLER}}
    async with (
        serving(route_config("ws://127.0.0.1:1/nothing")) as url,
        aiohttp.ClientSession(headers=headers) as http,
    ):
        for method, path, body in [
            ("GET", f"/ac/r?caller={CALLER}&token={SECRET}", None),
            ("POST", f"/ac/r?caller={CALLER}", {"conversation": CALLER}),
            ("POST", f"/ac/{CALLER[1:]}", {"conversation": CALLER}),
            ("POST", f"/ac/r/conversation/{CALLER}/activities", {"activities": [start]}),
            ("POST", f"/ac/r/conversation/{'9' * 5000}/refresh", {}),
            ("GET", f"/nowhere/{CALLER}?caller={CALLER}", None),
            ("PURGE", f"/ac/r/{CALLER}", None),
        ]:
            async with http.request(method, url + path, json=body) as reply:
                await reply.read()
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        # a request line the parser refuses, bytes a naive access line would quote
        writer.write(f"GET /ac/r?caller={CALLER} HTTP/1.1\r\nX: a\x01{SECRET}\r\n\r\n".encode())
        await writer.drain()
        await reader.read()
        writer.close()
    text = log_stream.getvalue()
    for leak in LEAKS:
        assert leak not in text, leak
    assert "<redacted>" not in text.replace("conversation=<redacted>", "")
    assert [summary(m) for m in access_lines(text)] == [
        "GET probe 401 route=r",
        "POST create 401 route=r",
        "POST create 404 route=_unknown",
        "POST activities 401 route=r conversation=<redacted>",
        "POST refresh 401 route=r conversation=<redacted>",
        "GET unmatched 404",
        "OTHER unmatched 404",
        "OTHER unmatched 400",  # the parser's refusal: no method, no route looked up
    ]


async def test_a_logger_off_for_info_formats_nothing(log_stream: io.StringIO) -> None:
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        async with (
            serving(route_config("ws://127.0.0.1:1/nothing")) as url,
            aiohttp.ClientSession() as http,
            http.get(f"{url}/healthz") as reply,
        ):
            assert reply.status == 200
    finally:
        logging.getLogger("aiohttp.access").setLevel(logging.NOTSET)
    assert " aiohttp.access " not in log_stream.getvalue()

    class Untouched:
        """A request or response that records every attribute read."""

        read: list[str] = []

        def __getattribute__(self, name: str) -> Any:
            Untouched.read.append(name)
            return object.__getattribute__(self, name)

    quiet = logging.getLogger("tests.access.quiet")
    quiet.setLevel(logging.WARNING)
    access = AccessLogger(quiet, "")
    assert access.enabled is False
    access.log(Untouched(), Untouched(), 0.002)  # type: ignore[arg-type]
    assert Untouched.read == []
    quiet.setLevel(logging.INFO)
    assert access.enabled is True


async def test_no_access_log_means_no_access_logger(log_stream: io.StringIO) -> None:
    assert runner_options(False) == {"access_log": None}
    assert runner_options(True) == {"access_log_class": AccessLogger}
    async with (
        serving(route_config("ws://127.0.0.1:1/nothing"), access_log=False) as url,
        aiohttp.ClientSession() as http,
        http.get(f"{url}/healthz") as reply,
    ):
        assert reply.status == 200
    assert " aiohttp.access " not in log_stream.getvalue()


def test_the_option_defaults_on() -> None:
    parser = build_parser()
    assert parser.parse_args(["serve", "--config", "c.yaml"]).access_log is True
    assert parser.parse_args(["serve", "--config", "c.yaml", "--no-access-log"]).access_log is False


def test_every_route_of_the_gateway_has_a_kind() -> None:
    app = create_app(route_config("ws://127.0.0.1:1/nothing"))
    canonicals = {resource.canonical for resource in app.router.resources()}
    assert len(canonicals) > 15
    kinds = {c: kind_of("GET", c) for c in canonicals}
    assert not [c for c, kind in kinds.items() if kind in ("other", "unmatched")]
    assert kind_of("POST", "/ac/{route}") == "create"
    assert kind_of("HEAD", "/ac/{route}") == "probe"
    assert kind_of("GET", "/ac/{route}", upgrade=True) == "stream"
    assert kind_of("GET", None) == "unmatched"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _serve_once(config: Path, *options: str) -> str:
    """`python -m bridge serve` with `options`, one GET /healthz, SIGTERM; its stderr."""
    port = _free_port()
    command = [sys.executable, "-m", "bridge", "serve", "--config", str(config)]
    command += ["--listen", f"127.0.0.1:{port}", *options]
    process = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as reply:
                        assert reply.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return err.decode()


async def test_serve_logs_the_short_line_by_default_and_none_with_no_access_log(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(
        "drain_timeout_s: 0\nroutes:\n  r:\n    token: t0k\n    voicegateway:\n"
        '      url: "ws://127.0.0.1:9/app"\n',
        encoding="utf-8",
    )
    default = await _serve_once(config)
    healthz = [m for m in access_lines(default) if m["kind"] == "healthz"]
    assert [summary(m) for m in healthz] == ["GET healthz 200"], default
    off = await _serve_once(config, "--no-access-log")
    assert "acvg-bridge listening" in off
    assert " aiohttp.access " not in off, off
