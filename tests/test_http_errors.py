"""Requests aiohttp's parser refuses, over real sockets: a JSON error with the right status, a
counter, one log line without the request's bytes, the connection closed, the bridge unharmed.

Each malformed request carries a fake bearer token and a caller number in the very line the
parser refuses (the line aiohttp would quote), sent as raw bytes to a bridge served by
`JsonErrorRunner` on 127.0.0.1 — on the standard loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import uvloop
import yaml
from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    InvalidHeader,
    LineTooLong,
    TransferEncodingError,
)

from bridge.app import GatewayKey, create_app
from bridge.config import parse_config
from bridge.transport.http_errors import JsonErrorRunner, Rejection, describe

TOKEN = "Bearer s3cr3t-token"
NUMBER = "+4915112345678"
LEAKS = ("s3cr3t", "4915112345678")  # what no answer and no log record may contain
PAD = "a" * 9000  # beyond aiohttp's 8190-byte request line / header field limits


@dataclass(frozen=True)
class Case:
    request: bytes
    status: int
    error: str


def _request(*lines: str, body: bytes = b"") -> bytes:
    return "".join(f"{line}\r\n" for line in (*lines, "")).encode("latin-1") + body


CASES = {
    "garbage_method": Case(
        _request(f"G@T /ac/r/{TOKEN.replace(' ', '-')}/{NUMBER} HTTP/1.1", "Host: bridge"),
        400,
        "malformed_http",
    ),
    "content_length_not_a_number": Case(
        _request(
            "POST /ac/r HTTP/1.1",
            "Host: bridge",
            f"Content-Length: abc {TOKEN} {NUMBER}",
        ),
        400,
        "malformed_http",
    ),
    "control_char_in_header_value": Case(
        _request("GET /ac/r HTTP/1.1", "Host: bridge", f"Authorization: {TOKEN}\x01{NUMBER}"),
        400,
        "malformed_http",
    ),
    "request_line_too_long": Case(
        _request(f"GET /ac/r?caller={NUMBER}&token=s3cr3t-token&{PAD} HTTP/1.1", "Host: bridge"),
        431,
        "headers_too_large",
    ),
    "header_too_long": Case(
        _request("GET /ac/r HTTP/1.1", "Host: bridge", f"Authorization: {TOKEN} {NUMBER} {PAD}"),
        431,
        "headers_too_large",
    ),
    "too_many_headers": Case(
        _request(
            "GET /ac/r HTTP/1.1",
            "Host: bridge",
            *(f"X-Caller-{i}: {NUMBER} {TOKEN}" for i in range(200)),
        ),
        431,
        "headers_too_large",
    ),
    "bad_chunk_size": Case(
        _request(
            "POST /ac/r HTTP/1.1",
            "Host: bridge",
            "Authorization: Bearer tok",
            "Transfer-Encoding: chunked",
            body=f"{NUMBER} s3cr3t-token\r\n{{}}\r\n0\r\n\r\n".encode(),
        ),
        400,
        "malformed_http",
    ),
}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Served:
    app: web.Application
    port: int

    def rejected(self, reason: str) -> float:
        labels = {"route": "_unknown", "reason": reason}
        registry = self.app[GatewayKey].metrics.registry
        value = registry.get_sample_value("acvg_rejected_requests_total", labels)
        return 0.0 if value is None else value

    async def exchange(self, data: bytes) -> Answer:
        """Send `data` on a new connection and read until the server closes it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), 10)  # EOF: the server closed
        finally:
            writer.close()
        return parse_answer(raw)

    async def healthz(self) -> Answer:
        """A well-formed request on a new connection (closed by asking for it)."""
        return await self.exchange(
            _request("GET /healthz HTTP/1.1", "Host: bridge", "Connection: close")
        )


def parse_answer(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


def _config_text() -> str:
    route = {"token": "tok", "legacy": {"url": "http://127.0.0.1:9/legacy"}}
    return yaml.safe_dump({"routes": {"r": route}})


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("a genuine handler failure")


async def _serve(**runner_options: int) -> tuple[JsonErrorRunner, Served]:
    app = create_app(parse_config(_config_text(), env={}))
    app.router.add_get("/boom", _boom)  # a handler exception must keep aiohttp's 500 and log
    runner = JsonErrorRunner(app, **runner_options)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, Served(app, int(runner.addresses[0][1]))


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    runner, server = await _serve()
    yield server
    await runner.cleanup()


def assert_json_error(answer: Answer, case: Case) -> None:
    assert answer.status == case.status, answer
    assert answer.headers["content-type"].startswith("application/json"), answer
    body = json.loads(answer.body)
    assert set(body) == {"error", "message"}
    assert body["error"] == case.error
    assert isinstance(body["message"], str) and body["message"]
    assert not any(leak in answer.body.decode() for leak in LEAKS), body


async def check_case(served: Served, case: Case) -> None:
    before = served.rejected(case.error)
    assert_json_error(await served.exchange(case.request), case)
    assert served.rejected(case.error) == before + 1
    healthy = await served.healthz()
    assert (healthy.status, json.loads(healthy.body)) == (200, {"status": "ok"})


@pytest.mark.parametrize("name", list(CASES))
async def test_malformed_request_gets_a_json_error(
    served: Served, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await check_case(served, CASES[name])

    assert not any(leak in caplog.text for leak in LEAKS), caplog.text
    assert [r for r in caplog.records if r.name == "aiohttp.server"] == []
    assert all(r.exc_info is None and r.exc_text is None for r in caplog.records)
    (line,) = [r for r in caplog.records if r.name == "bridge.http"]
    assert line.levelno == (logging.INFO if name == "garbage_method" else logging.WARNING)
    assert CASES[name].error in line.getMessage()


def test_the_same_on_uvloop() -> None:
    async def every_case() -> None:
        runner, served = await _serve()
        try:
            for case in CASES.values():
                await check_case(served, case)
        finally:
            await runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        runner.run(every_case())


async def test_runner_options_reach_the_connections() -> None:
    runner, served = await _serve(max_field_size=100, max_headers=4)
    try:
        long_header = _request("GET /healthz HTTP/1.1", "Host: bridge", "X-Pad: " + "b" * 200)
        answer = await served.exchange(long_header)
        assert answer.status == 431
        assert json.loads(answer.body)["message"] == (
            "the request line or a header field is longer than 100 bytes"
        )
        many = _request("GET /healthz HTTP/1.1", *(f"X-H{i}: v" for i in range(6)))
        answer = await served.exchange(many)
        assert answer.status == 431
        assert json.loads(answer.body)["message"] == "more than 4 header fields"
    finally:
        await runner.cleanup()


async def test_handler_exceptions_keep_aiohttps_answer_and_log(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    answer = await served.exchange(
        _request("GET /boom HTTP/1.1", "Host: bridge", "Connection: close")
    )
    assert answer.status == 500
    (record,) = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert served.rejected("malformed_http") == 0


async def test_a_pipelined_good_request_is_answered_before_the_bad_one(served: Served) -> None:
    good = _request("GET /healthz HTTP/1.1", "Host: bridge")
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(good)
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b'{"status": "ok"}'), 10)
        assert parse_answer(first).status == 200
        writer.write(CASES["control_char_in_header_value"].request)
        await writer.drain()
        second = parse_answer(await asyncio.wait_for(reader.read(), 10))
    finally:
        writer.close()
    assert_json_error(second, CASES["control_char_in_header_value"])


# ---------------------------------------------------------------- describe (pure)

LLHTTP_MESSAGE = f"Invalid header value char:\n\n  b'Authorization: {TOKEN}\\x01{NUMBER}'\n    ^"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            BadHttpMessage(LLHTTP_MESSAGE),
            Rejection(400, "malformed_http", "malformed HTTP request: invalid header value char"),
        ),
        (
            BadHttpMethod(error="Received HTTPS traffic on an HTTP port"),
            Rejection(
                400,
                "malformed_http",
                "malformed HTTP request: received HTTPS traffic on an HTTP port",
            ),
        ),
        (
            BadHttpMethod(f"G@T /{NUMBER} HTTP/1.1"),
            Rejection(400, "malformed_http", "malformed HTTP request: invalid method"),
        ),
        (
            InvalidHeader(f"X-Token: {TOKEN}".encode()),
            Rejection(400, "malformed_http", "malformed HTTP request: invalid header"),
        ),
        (
            TransferEncodingError(f"{NUMBER} s3cr3t-token"),
            Rejection(
                400, "malformed_http", "malformed HTTP request: the request cannot be parsed"
            ),
        ),
        (
            LineTooLong(f"{TOKEN}...".encode(), 8190),
            Rejection(
                431,
                "headers_too_large",
                "the request line or a header field is longer than 8190 bytes",
            ),
        ),
        (
            LineTooLong(f"{TOKEN}...".encode()),
            Rejection(
                431,
                "headers_too_large",
                "the request line or a header field is longer than the size limit",
            ),
        ),
        (
            BadHttpMessage("Too many headers received"),
            Rejection(431, "headers_too_large", "more than 128 header fields"),
        ),
    ],
)
def test_describe(exc: BadHttpMessage, expected: Rejection) -> None:
    assert describe(exc, max_headers=128) == expected
