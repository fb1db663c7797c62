"""The host's inbound passthrough: byte-exact under load, half-close, limits, idle, PROXY v2."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from pathlib import Path

import pytest

from nitrotls.transport import Address, ProxyServer, connect, inbound_opener, listen
from nitrotls.transport.proxy_protocol import ProxyHeader, read_header
from transport.support import Streams, echo, exchange, read_closed, run, wait_for

ENCLAVE = Address.vsock(16, 443)


def _inbound(**kwargs: object) -> ProxyServer:
    proxy_header = bool(kwargs.pop("proxy_header", False))
    return ProxyServer(
        "test inbound",
        Address.tcp("127.0.0.1", 0),
        inbound_opener(ENCLAVE, proxy_header=proxy_header),
        **kwargs,  # type: ignore[arg-type]
    )


def test_passthrough_is_byte_exact_for_200_concurrent_connections(nitrotls_home: Path) -> None:
    rng = random.Random(7)
    sizes = [
        rng.choice([0, 1, 1000, 65535, 65536, 65537, rng.randrange(300_000)]) for _ in range(200)
    ]
    payloads = [rng.randbytes(size) for size in sizes]

    async def scenario() -> list[tuple[str, str]]:
        async with await listen(ENCLAVE, echo):
            proxy = _inbound(max_connections=400, idle_timeout=30)
            await proxy.start()
            try:

                async def one(payload: bytes) -> tuple[str, str]:
                    reply = await exchange(await connect(proxy.address), payload)
                    return hashlib.sha256(payload).hexdigest(), hashlib.sha256(reply).hexdigest()

                return await asyncio.gather(*(one(p) for p in payloads))
            finally:
                await proxy.stop()

    results = run(scenario(), limit=120)
    assert len(results) == 200
    assert all(sent == received for sent, received in results)
    assert sum(sizes) > 1_000_000  # the run moved real volume, not just empty connections


async def _reply_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the whole request (until the client's half-close), then answer at length."""
    request = await reader.read(-1)
    digest = hashlib.sha256(request).digest()
    writer.write(digest + digest * 40_000)
    await writer.drain()
    writer.close()


def test_client_half_close_still_receives_the_full_reply(nitrotls_home: Path) -> None:
    request = random.Random(1).randbytes(300_000)

    async def scenario() -> bytes:
        async with await listen(ENCLAVE, _reply_after_eof):
            proxy = _inbound()
            await proxy.start()
            try:
                return await exchange(await connect(proxy.address), request)
            finally:
                await proxy.stop()

    reply = run(scenario())
    digest = hashlib.sha256(request).digest()
    assert reply == digest * 40_001


def test_upstream_half_close_lets_the_client_keep_sending(nitrotls_home: Path) -> None:
    received: list[bytes] = []

    async def greet_then_listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"greeting")
        writer.write_eof()
        received.append(await reader.read(-1))
        writer.close()

    async def scenario() -> bytes:
        async with await listen(ENCLAVE, greet_then_listen):
            proxy = _inbound()
            await proxy.start()
            try:
                reader, writer = await connect(proxy.address)
                greeting = await reader.read(-1)  # EOF from the enclave side arrives ...
                writer.write(b"late data" * 10_000)  # ... and our direction still works
                writer.write_eof()
                await writer.drain()
                await wait_for(lambda: bool(received))
                writer.close()
                return greeting
            finally:
                await proxy.stop()

    assert run(scenario()) == b"greeting"
    assert received == [b"late data" * 10_000]


def test_idle_connections_are_closed_on_both_sides(nitrotls_home: Path) -> None:
    async def scenario() -> tuple[bytes, bytes]:
        ended: list[bytes] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            ended.append(await read_closed(reader))
            writer.close()

        async with await listen(ENCLAVE, silent):
            proxy = _inbound(idle_timeout=0.2)
            await proxy.start()
            try:
                reader, writer = await connect(proxy.address)
                seen = await read_closed(reader)  # nobody sends: the proxy gives up
                await wait_for(lambda: bool(ended))
                await wait_for(lambda: proxy.active == 0)
                writer.close()
                return seen, ended[0]
            finally:
                await proxy.stop()

    assert run(scenario()) == (b"", b"")


def test_connection_limit_refuses_extra_connections(
    nitrotls_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nitrotls.transport")

    async def ping(streams: Streams, data: bytes) -> bytes:
        streams[1].write(data)
        await streams[1].drain()
        return await streams[0].readexactly(len(data))

    async def scenario() -> tuple[bytes, bytes]:
        async with await listen(ENCLAVE, echo):
            proxy = _inbound(max_connections=2)
            await proxy.start()
            try:
                first = await connect(proxy.address)
                second = await connect(proxy.address)
                assert await ping(first, b"one") == b"one"
                assert await ping(second, b"two") == b"two"
                third = await connect(proxy.address)
                refused = await read_closed(third[0])
                third[1].close()
                first[1].close()
                await wait_for(lambda: proxy.active < 2)
                fourth = await connect(proxy.address)
                again = await ping(fourth, b"four")
                for streams in (second, fourth):
                    streams[1].close()
                return refused, again
            finally:
                await proxy.stop()

    refused, again = run(scenario())
    assert refused == b""
    assert again == b"four"
    assert "connection limit of 2 reached" in caplog.text


def test_proxy_protocol_header_tells_the_enclave_the_client_address(nitrotls_home: Path) -> None:
    seen: list[ProxyHeader] = []

    async def enclave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_header(reader))
        await echo(reader, writer)

    async def scenario() -> tuple[bytes, tuple[str, int], int]:
        async with await listen(ENCLAVE, enclave):
            proxy = _inbound(proxy_header=True)
            await proxy.start()
            try:
                streams = await connect(proxy.address)
                local = streams[1].get_extra_info("sockname")
                reply = await exchange(streams, b"\x16\x03\x01 hello")
                return reply, (local[0], local[1]), proxy.address.port
            finally:
                await proxy.stop()

    reply, client, proxy_port = run(scenario())
    assert reply == b"\x16\x03\x01 hello"  # the header went to the enclave only
    assert seen == [ProxyHeader("PROXY", client, ("127.0.0.1", proxy_port))]


def test_unreachable_enclave_drops_the_client_and_logs(
    nitrotls_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nitrotls.transport")

    async def scenario() -> bytes:
        proxy = _inbound()
        await proxy.start()
        try:
            reader, writer = await connect(proxy.address)
            gone = await read_closed(reader)
            writer.close()
            return gone
        finally:
            await proxy.stop()

    assert run(scenario()) == b""
    assert "vsock://16:443" in caplog.text and "cannot connect" in caplog.text


def test_stop_closes_the_listener_and_ends_open_connections(nitrotls_home: Path) -> None:
    async def scenario() -> bytes:
        async with await listen(ENCLAVE, echo):
            listen_at = Address.unix(nitrotls_home / "in.sock")
            proxy = ProxyServer("test inbound", listen_at, inbound_opener(ENCLAVE))
            await proxy.start()
            reader, writer = await connect(listen_at)
            writer.write(b"x")
            await reader.readexactly(1)
            await proxy.stop(drain=0.05)
            assert not (nitrotls_home / "in.sock").exists()
            assert proxy.active == 0
            ended = await read_closed(reader)
            writer.close()
            return ended

    assert run(scenario()) == b""
