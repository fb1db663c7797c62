"""The idle clock and the relay's direct behaviour, without a listening proxy."""

from __future__ import annotations

import asyncio
import socket

from nitrotls.transport.relay import IdleTimer, relay
from transport.support import run


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_idle_timer_counts_from_the_last_touch() -> None:
    clock = FakeClock()
    timer = IdleTimer(5.0, clock)
    clock.now += 4.0
    assert timer.remaining() == 1.0
    timer.touch()
    clock.now += 4.0
    assert timer.remaining() == 1.0  # activity pushed the deadline out
    clock.now += 2.0
    assert timer.remaining() < 0


async def _pair() -> tuple[
    tuple[asyncio.StreamReader, asyncio.StreamWriter],
    tuple[asyncio.StreamReader, asyncio.StreamWriter],
]:
    left, right = socket.socketpair()
    return await asyncio.open_connection(sock=left), await asyncio.open_connection(sock=right)


def test_relay_counts_bytes_and_ends_cleanly_after_both_eofs() -> None:
    async def scenario() -> tuple[object, bytes, bytes]:
        client_end, proxy_client = await _pair()
        proxy_upstream, upstream_end = await _pair()
        task = asyncio.create_task(relay(proxy_client, proxy_upstream, idle_timeout=30))
        client_end[1].write(b"a" * 1000)
        client_end[1].write_eof()
        at_upstream = await upstream_end[0].read(-1)
        upstream_end[1].write(b"b" * 10)
        upstream_end[1].write_eof()
        at_client = await client_end[0].read(-1)
        result = await task
        for streams in (client_end, proxy_client, proxy_upstream, upstream_end):
            streams[1].close()
        return result, at_upstream, at_client

    result, at_upstream, at_client = run(scenario())
    assert (result.sent, result.received, result.outcome) == (1000, 10, "closed")  # type: ignore[attr-defined]
    assert at_upstream == b"a" * 1000
    assert at_client == b"b" * 10


def test_writing_to_a_vanished_peer_aborts_both_sides() -> None:
    async def scenario() -> tuple[str, bytes]:
        client_end, proxy_client = await _pair()
        proxy_upstream, upstream_end = await _pair()
        task = asyncio.create_task(relay(proxy_client, proxy_upstream))
        client_end[1].write(b"hello")
        await upstream_end[0].readexactly(5)
        upstream_end[1].transport.abort()  # gone for good, not just a half-close
        first = await client_end[0].read(-1)  # the relay passes the EOF on
        client_end[1].write(b"more")  # ... and the write side is still open
        result = await task  # writing upstream fails: the relay aborts both sides
        client_end[1].close()
        return result.outcome, first

    outcome, first = run(scenario())
    assert first == b""
    assert outcome == "error"
