"""Reverse-proxy faults found by audit: upstream socket reuse, backpressure, 1xx floods, replays."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from nitrotls.server.identity import ContextHolder, Served
from nitrotls.server.metrics import Metrics
from nitrotls.server.proxy import ProxyConnection, ProxyEngine, ProxySettings
from nitrotls.server.upstream import MAX_INTERIM, UpstreamConnection, UpstreamPool

from .conftest import (
    PKI,
    Exchange,
    echo,
    open_tls,
    port_of,
    proxy_options,
    read_response,
    running,
    served_from,
    upstream_server,
)

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_upstream(handler: RawHandler) -> AsyncIterator[tuple[str, list[int]]]:
    """An upstream speaking raw bytes (to misbehave in ways h11 will not); yields its URL and
    a one-item list counting the connections it accepted."""
    accepted = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", accepted
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)


def test_early_answer_never_pools_a_socket_with_an_unsent_body(pki: PKI) -> None:
    """Upstream answers a POST before its body arrived and keeps reading the body: that socket
    must not carry the next client's request, which would land inside the old body."""

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            first = head.split(b"\r\n", 1)[0]
            match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
            length = int(match[1]) if match else 0
            if first.startswith(b"POST"):
                writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno")
                await reader.readexactly(length)  # RFC 9112 lets it drain the body
                continue
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(first), first))

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        settings = ProxySettings(upstream_timeout=2.0)
        async with (
            raw_upstream(early) as (url, accepted),
            running(proxy_options(url, proxy=settings), holder) as server,
        ):
            port = port_of(server)
            reader, writer = await open_tls(port, pki.client_context())
            writer.write(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 200\r\n\r\n" + b"x" * 10)
            status, _, body = await read_response(reader)
            assert (status, body) == (401, b"no")
            writer.close()
            reader, writer = await open_tls(port, pki.client_context())
            writer.write(b"GET /victim HTTP/1.1\r\nHost: h\r\n\r\n")
            status, _, body = await read_response(reader)
            assert (status, body) == (200, b"GET /victim HTTP/1.1")
            assert accepted[0] == 2  # the half-sent socket was closed, not reused
            writer.close()

    asyncio.run(scenario())


class _FakeTransport(asyncio.Transport):
    """Records writes; calls ``pause_writing`` once more than ``high`` bytes are buffered."""

    def __init__(self, protocol: asyncio.Protocol | None = None, high: int | None = None) -> None:
        super().__init__()
        self.protocol = protocol
        self.high = high
        self.data = b""
        self.reading = True
        self.closed = False
        self.write_paused = False

    def write(self, data: Any) -> None:
        self.data += bytes(data)
        over = self.high is not None and len(self.data) > self.high
        if over and not self.write_paused and self.protocol is not None:
            self.write_paused = True
            self.protocol.pause_writing()

    def drain(self) -> None:
        self.data = b""
        if self.write_paused and self.protocol is not None:
            self.write_paused = False
            self.protocol.resume_writing()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def test_backpressure_never_pauses_a_pooled_upstream() -> None:
    """The last bytes of a response cross the client's high-water mark after the upstream went
    back to the pool: the pooled socket must keep reading, or its next user waits for 504."""

    async def scenario() -> None:
        pool = UpstreamPool("127.0.0.1", 1)
        engine = ProxyEngine(ProxySettings(), pool, Metrics(), None, b"up")
        upstream = UpstreamConnection(pool)
        up_transport = _FakeTransport()
        upstream.connection_made(up_transport)
        pool.give_back(upstream)
        client = ProxyConnection(engine, cast(Served, None), "127.0.0.1")
        client_transport = _FakeTransport(client, high=64 * 1024)
        client.connection_made(client_transport)

        client.data_received(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        body = b"B" * 100_000
        upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert client_transport.write_paused and client_transport.data.endswith(body)
        client_transport.drain()
        client.data_received(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
        assert client._upstream is upstream  # the same rested socket was reused ...
        assert up_transport.reading  # ... and it reads the answer
        assert up_transport.data.count(b"GET /next ") == 1

    asyncio.run(scenario())


def test_interim_flood_is_a_bad_upstream(pki: PKI) -> None:
    """Thousands of 1xx heads in one write: no recursion, a capped count, then a 502."""

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 103 Early Hints\r\n\r\n" * 3000
            + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        await reader.read()

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with (
            raw_upstream(flood) as (url, _),
            running(proxy_options(url), holder) as server,
        ):
            reader, writer = await open_tls(port_of(server), pki.client_context())
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            interim = 0
            while True:
                status, _, _ = await read_response(reader)
                if status >= 200:
                    break
                interim += 1
            assert status == 502
            assert interim <= MAX_INTERIM
            assert server.metrics.upstream_errors == 1
            writer.close()

    asyncio.run(scenario())


def test_non_idempotent_request_is_not_replayed(pki: PKI) -> None:
    """A reused upstream socket reads a body-less POST and dies unanswered: upstream may have
    acted on it, so the client gets 502 and the POST is not sent a second time."""
    posts: list[str] = []

    async def crash_on_post(exchange: Exchange) -> None:
        if exchange.request.method == b"POST":
            posts.append(exchange.path)
            exchange.writer.transport.abort()
            return
        await exchange.reply(200, b"ok")

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with (
            upstream_server(crash_on_post) as up,
            running(proxy_options(up.url), holder) as server,
        ):
            reader, writer = await open_tls(port_of(server), pki.client_context())
            writer.write(b"GET /warm HTTP/1.1\r\nHost: h\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            writer.write(b"POST /pay HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
            status, _, _ = await read_response(reader)
            assert status == 502
            assert posts == ["/pay"]
            writer.close()

    asyncio.run(scenario())


def test_http10_keep_alive_is_confirmed(pki: PKI) -> None:
    """An HTTP/1.0 client that asked for keep-alive is told so, and the line stays open."""

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server(echo) as up, running(proxy_options(up.url), holder) as server:
            reader, writer = await open_tls(port_of(server), pki.client_context())
            for index in range(2):
                writer.write(b"GET /%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % index)
                status, headers, _ = await read_response(reader)
                assert status == 200
                assert headers.get("connection") == "keep-alive"
            writer.close()

    asyncio.run(scenario())
