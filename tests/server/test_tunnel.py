"""Upgraded connections (after 101): a clean end is a clean close, silence has a deadline, and
``h2c`` is never forwarded."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time

import h11

from nitrotls.server.identity import ContextHolder
from nitrotls.server.proxy import ProxySettings

from .conftest import (
    PKI,
    Exchange,
    open_tls,
    port_of,
    proxy_options,
    read_response,
    running,
    served_from,
    upstream_server,
)

UPGRADE = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
BIG = 4 * 1024 * 1024


async def _switch(exchange: Exchange) -> bytes:
    """Answer 101; return the bytes that came after the request head."""
    switching = h11.InformationalResponse(
        status_code=101, headers=[("Upgrade", "echo"), ("Connection", "upgrade")]
    )
    exchange.writer.write(exchange.conn.send(switching))
    await exchange.writer.drain()
    data, _ = exchange.conn.trailing_data
    return data


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until the TLS connection ends; a reset or an unclean end raises."""
    data = b""
    while chunk := await asyncio.wait_for(reader.read(65536), 10):
        data += chunk
    return data


def _tunnel_to_the_end(port: int, context: ssl.SSLContext) -> bytes:
    """A blocking client that upgrades, waits, then reads to the end; with ragged EOFs not
    suppressed, a TCP end without close_notify raises ``SSLEOFError``."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as tls,
    ):
        tls.sendall(UPGRADE)
        data = b""
        while b"\r\n\r\n" not in data:
            data += tls.recv(65536)
        head, _, data = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        time.sleep(0.5)  # the upstream has sent everything and closed by now
        while chunk := tls.recv(65536):
            data += chunk
        return data


def test_upstream_closing_the_tunnel_delivers_everything_then_closes_cleanly(pki: PKI) -> None:
    """The upstream sends 4 MiB and closes at once, while the client is not reading yet: the
    client gets every byte and then close_notify, not a bare TCP end (which a client cannot
    tell from a truncation attack)."""

    async def upgrade(exchange: Exchange) -> None:
        await _switch(exchange)
        exchange.writer.write(b"x" * BIG)
        await exchange.writer.drain()  # then the handler returns: the upstream socket closes

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server(upgrade) as up, running(proxy_options(up.url), holder) as s:
            data = await asyncio.to_thread(_tunnel_to_the_end, port_of(s), pki.client_context())
            assert data == b"x" * BIG

    asyncio.run(scenario())


def test_silent_tunnel_is_closed_after_the_idle_timeout_and_traffic_keeps_it(pki: PKI) -> None:
    ended = asyncio.Event

    async def scenario() -> None:
        upstream_saw_end = ended()

        async def upgrade(exchange: Exchange) -> None:
            data = await _switch(exchange)
            assert exchange.reader is not None
            while True:  # echo until the proxy closes its side
                exchange.writer.write(data.upper())
                data = await exchange.reader.read(65536)
                if not data:
                    upstream_saw_end.set()
                    return

        holder = ContextHolder(served_from(pki.issue()))
        settings = ProxySettings(idle_timeout=0.3)
        async with (
            upstream_server(upgrade) as up,
            running(proxy_options(up.url, proxy=settings), holder) as s,
        ):
            reader, writer = await open_tls(port_of(s), pki.client_context())
            writer.write(UPGRADE)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 101")
            for letter in b"abcdefghij":  # 1 s of traffic, a byte every 0.1 s: kept open
                writer.write(bytes([letter]))
                assert await asyncio.wait_for(reader.readexactly(1), 10) == bytes([letter - 32])
                await asyncio.sleep(0.1)
            assert await _read_to_end(reader) == b""  # then silence: a clean close
            await asyncio.wait_for(upstream_saw_end.wait(), 10)
            assert s.metrics.timeouts == 1
            writer.close()

    asyncio.run(scenario())


def test_h2c_upgrade_is_not_forwarded(pki: PKI) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up, running(proxy_options(up.url), holder) as s:
            reader, writer = await open_tls(port_of(s), pki.client_context())
            writer.write(
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            )
            status, _, body = await read_response(reader)
            assert status == 200  # answered as plain HTTP/1.1
            names = {name.lower() for name, _ in json.loads(body)["headers"]}
            assert not names & {"upgrade", "http2-settings"}
            connection = [v for k, v in json.loads(body)["headers"] if k.lower() == "connection"]
            assert all("upgrade" not in v.lower() for v in connection)
            writer.close()

    asyncio.run(scenario())
