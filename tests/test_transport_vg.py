"""The jambonz WebSocket client (bridge/transport/vg.py) against real sockets on 127.0.0.1.

What the socket offers and accepts in the handshake, the close codes it reports (RFC 6455
§7.1.5, as vg_path's reconnect logic reads them), frames and their size limit, what every way of
failing to connect is reported as, redirects, and the shared session's lifetime and (absent)
connection limit. Apps are small aiohttp servers, or raw TCP servers where a peer must break
the protocol.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import socket
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from bridge.transport.vg import (
    MAX_FRAME_BYTES,
    ReconnectOptions,
    UpstreamConnectError,
    VoiceGatewayClient,
    VoiceGatewaySocket,
    open_socket,
    retry_classes,
    should_retry,
    socket_opener,
)
from bridge.voicegateway.wire import SUBPROTOCOL
from tests.test_tls import Certificate, certificate, serve_tls  # noqa: F401  (a fixture)

SECRET = "vgs-Ew6Rt1Yu8Io3"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[Handler], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serve a one-handler app on loopback; returns its ws:// base URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"ws://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve_raw() -> AsyncIterator[Callable[[RawHandler], Awaitable[str]]]:
    """A TCP server running `handler` per connection; returns its ws:// base URL."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(handler: RawHandler) -> str:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            await handler(reader, writer)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        servers.append(server)
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for writer in writers:
        writer.close()
    for server in servers:
        server.close()


async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, extra: str) -> None:
    """Answer the client's upgrade request with a valid 101 plus `extra` header lines."""
    request = await reader.readuntil(b"\r\n\r\n")
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(
        hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    ).decode()
    writer.write(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        ).encode()
    )
    await writer.drain()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def app_socket(request: web.Request, **options: Any) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), **options)
    await ws.prepare(request)
    return ws


async def connect_error(url: str, timeout_s: float = 2.0) -> UpstreamConnectError:
    with pytest.raises(UpstreamConnectError) as raised:
        await open_socket(url, timeout_s=timeout_s)
    rendered = "".join(traceback.format_exception(raised.value))
    assert SECRET not in rendered, rendered  # the URL's path is often the endpoint's secret
    return raised.value


# ---------------------------------------------------------------- the handshake


async def test_handshake_offers_the_jambonz_subprotocol_without_the_fragment(
    serve: Serve,
) -> None:
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        ws = await app_socket(request)
        await ws.receive()
        return ws

    url = await serve(handler)
    sock = await open_socket(f"{url}/app/{SECRET}?k=v#rc=2&rp=all", timeout_s=2)
    [request] = seen
    assert request.path_qs == f"/app/{SECRET}?k=v"
    assert request.headers["Sec-WebSocket-Protocol"] == SUBPROTOCOL
    assert request.headers["User-Agent"] == "acvg-bridge"
    assert "Sec-WebSocket-Extensions" not in request.headers  # no compression offered
    assert "Cookie" not in request.headers
    await sock.close()


async def test_a_server_that_picks_no_subprotocol_is_accepted(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()  # no protocols: the response names none
        await ws.prepare(request)
        await ws.send_str('{"type":"ack"}')
        await ws.receive()
        return ws

    sock = await open_socket(await serve(handler) + "/", timeout_s=2)
    assert await sock.receive() == '{"type":"ack"}'
    await sock.close()
    assert sock.close_code == 1000


@pytest.mark.parametrize(
    "header",
    ["Sec-WebSocket-Protocol: other.protocol", "Sec-WebSocket-Extensions: permessage-deflate"],
    ids=["subprotocol", "extension"],
)
async def test_what_was_not_offered_fails_the_handshake(
    serve_raw: Callable[[RawHandler], Awaitable[str]], header: str
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer, header + "\r\n")
        await reader.read()

    error = await connect_error(await serve_raw(handler) + f"/{SECRET}")
    assert error.kind == "handshake" and error.status is None
    assert retry_classes(error) == {"other"}


# ---------------------------------------------------------------- close codes


@pytest.mark.parametrize("code", [1000, 1001, 1011, 4000])
async def test_the_peers_close_code_is_reported_and_echoed(serve: Serve, code: int) -> None:
    echoed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = await app_socket(request)
        await ws.send_str("{}")
        await ws.close(code=code)
        echoed.set_result(ws.close_code)
        return ws

    sock = await open_socket(await serve(handler) + "/", timeout_s=2)
    assert sock.close_code is None  # open
    assert await sock.receive() == "{}"
    assert await sock.receive() is None
    assert sock.close_code == code
    assert await sock.receive() is None  # and stays closed
    assert await asyncio.wait_for(echoed, 2) == code
    await sock.close()  # closing a closed socket is a no-op
    assert sock.close_code == code


async def test_a_close_frame_without_a_code_is_1005(
    serve_raw: Callable[[RawHandler], Awaitable[str]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer, "")
        writer.write(b"\x88\x00")  # FIN + close, no payload
        await writer.drain()
        await reader.read(2)  # the client's close frame
        writer.close()

    sock = await open_socket(await serve_raw(handler) + "/", timeout_s=2)
    assert await sock.receive() is None
    assert sock.close_code == 1005


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_a_connection_dropped_without_a_close_frame_is_1006(
    serve_raw: Callable[[RawHandler], Awaitable[str]], how: str
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer, "")
        writer.write(b"\x81\x02{}")
        await writer.drain()
        if how == "fin":
            writer.close()
        else:
            transport = writer.transport
            assert isinstance(transport, asyncio.Transport)
            transport.abort()

    sock = await open_socket(await serve_raw(handler) + "/", timeout_s=2)
    assert await sock.receive() == "{}"
    assert await sock.receive() is None
    assert sock.close_code == 1006  # never 1000: vg_path would take it for a graceful end


async def test_closing_reports_the_peers_answer_and_the_peer_sees_our_code(serve: Serve) -> None:
    got: list[int | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = await app_socket(request, autoclose=False)
        msg = await ws.receive()
        got.append(msg.data if msg.type is WSMsgType.CLOSE else None)
        await ws.close(code=4002)
        return ws

    sock = await open_socket(await serve(handler) + "/", timeout_s=2)
    await sock.close(4001)
    assert got == [4001]
    assert sock.close_code == 4002  # the code of the peer's answer
    assert await sock.receive() is None


async def test_close_while_another_task_receives(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = await app_socket(request)
        async for _ in ws:
            pass
        return ws

    sock = await open_socket(await serve(handler) + "/", timeout_s=2)
    reader = asyncio.create_task(sock.receive())
    await asyncio.sleep(0.05)
    await sock.close(1000)
    assert await asyncio.wait_for(reader, 2) is None
    assert sock.close_code == 1000


async def test_sending_after_close_raises(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = await app_socket(request)
        await ws.receive()
        return ws

    sock = await open_socket(await serve(handler) + "/", timeout_s=2)
    await sock.close()
    with pytest.raises(Exception):  # noqa: B017  (vg_path catches any error of a send)
        await sock.send_messages([{"type": "verb:status"}])


# ---------------------------------------------------------------- frames


async def test_messages_go_out_as_json_text_frames_in_order(serve: Serve) -> None:
    frames: list[tuple[WSMsgType, Any]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = await app_socket(request)
        async for msg in ws:
            frames.append((msg.type, msg.data))
        return ws

    sock = await open_socket(await serve(handler) + "/", timeout_s=2)
    await sock.send_messages([{"type": "session:new", "n": 1}, {"type": "verb:hook", "t": "é"}])
    await sock.close()
    assert frames == [
        (WSMsgType.TEXT, '{"type":"session:new","n":1}'),
        (WSMsgType.TEXT, '{"type":"verb:hook","t":"é"}'),
    ]


async def test_binary_frames_arrive_as_bytes_and_pings_are_answered(serve: Serve) -> None:
    pongs: list[bytes] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = await app_socket(request, autoping=False)
        await ws.ping(b"are you there")
        await ws.send_bytes(b'{"type":"ack"}')
        async for msg in ws:
            if msg.type is WSMsgType.PONG:
                pongs.append(msg.data)
        return ws

    sock = await open_socket(await serve(handler) + "/", timeout_s=2)
    assert await sock.receive() == b'{"type":"ack"}'  # the ping never surfaces
    await sock.close()
    assert pongs == [b"are you there"]


async def test_no_heartbeat_pings_are_sent(serve: Serve) -> None:
    received: list[WSMsgType] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = await app_socket(request, autoping=False)
        async for msg in ws:
            received.append(msg.type)
        return ws

    sock = await open_socket(await serve(handler) + "/", timeout_s=2)
    await asyncio.sleep(1.0)
    await sock.close()
    assert received == []  # only the close, which the server does not hand out


async def test_frames_up_to_one_mib_are_accepted_and_larger_ones_close_with_1009(
    serve: Serve,
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = await app_socket(request)
        await ws.send_str("x" * MAX_FRAME_BYTES)
        await ws.send_str("x" * (MAX_FRAME_BYTES + 1))
        await ws.receive()
        return ws

    sock = await open_socket(await serve(handler) + "/", timeout_s=2)
    frame = await sock.receive()
    assert isinstance(frame, str) and len(frame) == MAX_FRAME_BYTES
    assert await sock.receive() is None
    assert sock.close_code == 1009


# ---------------------------------------------------------------- failing to connect


async def test_refused_is_connect() -> None:
    error = await connect_error(f"ws://127.0.0.1:{closed_port()}/{SECRET}")
    assert error.kind == "connect" and retry_classes(error) == {"ct"}


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_the_timeout_covers_tcp_tls_and_the_upgrade(
    serve_raw: Callable[[RawHandler], Awaitable[str]], scheme: str
) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    url = (await serve_raw(never_answer)).replace("ws://", f"{scheme}://")
    started = time.monotonic()
    error = await connect_error(f"{url}/{SECRET}", timeout_s=0.3)
    assert error.kind == "timeout" and retry_classes(error) == {"ct", "rt"}
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(("status", "retried_as"), [(503, "5xx"), (404, "4xx"), (401, "4xx")])
async def test_an_http_answer_instead_of_101_is_handshake_with_its_status(
    serve: Serve, status: int, retried_as: str
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text="no")

    error = await connect_error(await serve(handler) + f"/{SECRET}")
    assert error.kind == "handshake" and error.status == status
    assert error.detail == f"server rejected WebSocket connection: HTTP {status}"
    assert retry_classes(error) == {retried_as}
    assert should_retry(error, ReconnectOptions(retry_on=frozenset({retried_as})))
    assert not should_retry(error, ReconnectOptions())


@pytest.mark.parametrize("answer", [b"", b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"])
async def test_no_valid_upgrade_response_is_handshake(
    serve_raw: Callable[[RawHandler], Awaitable[str]], answer: bytes
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        writer.close()

    error = await connect_error(await serve_raw(handler) + f"/{SECRET}")
    assert error.kind == "handshake"
    assert retry_classes(error) == {"other"}  # neither 4xx nor 5xx


@pytest.mark.parametrize(
    "url",
    [
        f"http://127.0.0.1:1/{SECRET}",
        f"ws:///{SECRET}",
        f"ws://:99999/{SECRET}",
        f"ws://127.0.0.1:99999/{SECRET}",
        f"ws://user@127.0.0.1:1/{SECRET}",
        f"not a url {SECRET}",
    ],
)
async def test_a_bad_url_is_bad_url(url: str) -> None:
    error = await connect_error(url)
    assert error.kind == "bad_url" and retry_classes(error) == frozenset()


async def test_an_untrusted_certificate_is_tls(certificate: Certificate) -> None:  # noqa: F811
    async def handler(request: web.Request) -> web.StreamResponse:
        return await app_socket(request)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    async with serve_tls(app, certificate) as port:
        error = await connect_error(f"wss://127.0.0.1:{port}/{SECRET}")
    assert error.kind == "tls" and error.detail == "CERTIFICATE_VERIFY_FAILED"


async def test_wss_with_the_configured_context_connects(
    certificate: Certificate,  # noqa: F811
) -> None:
    import ssl

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = await app_socket(request)
        await ws.send_str("{}")
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    context = ssl.create_default_context(cafile=str(certificate.cert))
    client = socket_opener(context)
    async with serve_tls(app, certificate) as port:
        sock = await client(f"wss://127.0.0.1:{port}/", 2.0)
        assert await sock.receive() == "{}"
        await sock.close()
        one_off = await open_socket(f"wss://127.0.0.1:{port}/", timeout_s=2, ssl=context)
        await one_off.close()
    await client.close()


# ---------------------------------------------------------------- redirects


async def test_redirects_are_followed(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/first":
            raise web.HTTPFound(f"ws://{request.host}/second")  # absolute ws://
        if request.path == "/second":
            raise web.HTTPFound("/third")  # relative
        ws = await app_socket(request)
        await ws.send_str(request.path)
        await ws.receive()
        return ws

    sock = await open_socket(await serve(handler) + "/first", timeout_s=2)
    assert await sock.receive() == "/third"
    await sock.close()


async def test_a_redirect_loop_is_handshake(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"ws://{request.host}/{SECRET}")

    error = await connect_error(await serve(handler) + "/")
    assert error.kind == "handshake"


@pytest.mark.parametrize("scheme", ["ws", "http"])
async def test_wss_redirected_to_plain_text_is_refused(
    certificate: Certificate,  # noqa: F811
    serve: Serve,
    scheme: str,
) -> None:
    import ssl

    async def plain(request: web.Request) -> web.StreamResponse:
        return await app_socket(request)

    plain_url = await serve(plain)

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(plain_url.replace("ws://", f"{scheme}://") + f"/{SECRET}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", redirect)
    context = ssl.create_default_context(cafile=str(certificate.cert))
    async with serve_tls(app, certificate) as port:
        with pytest.raises(UpstreamConnectError) as raised:
            await open_socket(f"wss://127.0.0.1:{port}/", timeout_s=2, ssl=context)
    assert raised.value.kind == "handshake"
    assert raised.value.detail == "redirect to a non-secure URI"


# ---------------------------------------------------------------- the shared session


async def test_many_more_sockets_than_aiohttps_default_pool_limit_open_at_once(
    serve: Serve,
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = await app_socket(request)
        await ws.receive()
        return ws

    url = await serve(handler) + "/"
    client = VoiceGatewayClient(None)
    await client.start()
    sockets: list[VoiceGatewaySocket] = await asyncio.gather(
        *(client(url, 5.0) for _ in range(250))  # aiohttp's default limit is 100
    )
    assert all(s.close_code is None for s in sockets)
    await asyncio.gather(*(s.close() for s in sockets[:10]))
    # closing the client drops the sockets still open (the gateway closes it after its drain)
    await client.close()
    assert await sockets[-1].receive() is None
    assert sockets[-1].close_code == 1006
    with pytest.raises(UpstreamConnectError) as raised:
        await client(url, 1.0)
    assert raised.value.kind == "connect"


async def test_one_off_sessions_are_closed_with_their_socket(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = await app_socket(request)
        await ws.receive()
        return ws

    unclosed: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unclosed.append(context))
    try:
        url = await serve(handler) + "/"
        sock = await open_socket(url, timeout_s=2)
        await sock.close()
        with pytest.raises(UpstreamConnectError):
            await open_socket(f"ws://127.0.0.1:{closed_port()}/", timeout_s=2)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert [c["message"] for c in unclosed] == []


async def test_the_client_is_an_opener_the_app_starts_and_closes() -> None:
    from bridge.app import GatewayKey, create_app
    from tests.conftest import route_config

    app = create_app(route_config("ws://127.0.0.1:1/"))
    client = app[GatewayKey].opener
    assert isinstance(client, VoiceGatewayClient)
    runner = web.AppRunner(app)
    await runner.setup()
    with pytest.raises(UpstreamConnectError) as raised:
        await client("ws://127.0.0.1:1/", 1.0)
    assert raised.value.kind == "connect"
    await runner.cleanup()
    with pytest.raises(UpstreamConnectError):
        await client("ws://127.0.0.1:1/", 1.0)
