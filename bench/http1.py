"""A minimal keep-alive HTTP/1.1 client: one connection, one request at a time, for the load
generator's simulated calls.

Why it exists: the load generator shares a CPU core with the simulators, so it must cost far
less per request than the proxies it measures, or the load side saturates first and its queueing
shows up in every measured turn. aiohttp's client costs about as much per request as the bridge
itself. Here a request is one pre-encoded write and the answer is parsed by httptools (framed by
Content-Length or chunked); nothing else: no TLS, redirects, cookies, pooling or streaming.
"""

from __future__ import annotations

import asyncio
import socket
from typing import cast

import httptools


class _Protocol(asyncio.Protocol):
    """The socket's side: feeds what arrives to the parser, hands each answer to its waiter."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP answer: {exc}"))
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(ConnectionError("connection closed before the answer was complete"))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))


class Connection:
    """A keep-alive connection to `host:port`, opened on the first request and again on the
    next request after the server closed it (or answered `Connection: close`)."""

    def __init__(self, host: str, port: int, timeout: float = 15.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._host = b"Host: %s:%d\r\n" % (host.encode(), port)
        self._protocol: _Protocol | None = None
        self._busy = False

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: bytes = b""
    ) -> tuple[int, bytes]:
        """Send one request and return the answer's status and body.

        `headers`: further header lines, pre-encoded, each ending in CRLF (Host and
        Content-Length are added). Raises TimeoutError when the answer takes longer than
        `timeout` seconds (connecting included), OSError when connecting fails, ConnectionError
        when the connection drops before the answer is complete or the answer is malformed.
        """
        if self._busy:
            raise RuntimeError("one request at a time per connection")
        self._busy = True
        try:
            async with asyncio.timeout(self.timeout):
                protocol = self._protocol
                loop = asyncio.get_running_loop()
                if protocol is None or protocol.transport is None:
                    _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
                    self._protocol = protocol
                assert protocol.transport is not None
                protocol.waiter = waiter = loop.create_future()
                protocol.transport.write(
                    b"%s %s HTTP/1.1\r\n%sContent-Length: %d\r\n%s\r\n%s"
                    % (method.encode(), path.encode(), self._host, len(body), headers, body)
                )
                status, answer = await waiter
        except BaseException:
            # cut short, the connection may still get this answer: never reuse it
            self.close()
            raise
        finally:
            self._busy = False
        if not protocol.keep_alive:
            self.close()
        return status, answer

    def close(self) -> None:
        """Close the connection; a later request opens a new one."""
        if self._protocol is not None:
            if self._protocol.transport is not None:
                self._protocol.transport.close()
            self._protocol = None
