"""Helpers for transport tests: bounded runs, echo upstreams, exchanges."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(coro: Coroutine[Any, Any, T], *, limit: float = 30.0) -> T:
    """Run ``coro`` with an upper bound, so a bug shows up as a failure, never a hang."""

    async def bounded() -> T:
        async with asyncio.timeout(limit):
            return await coro

    return asyncio.run(bounded())


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Stream every byte back; answer EOF with EOF, then close."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def exchange(streams: Streams, payload: bytes) -> bytes:
    """Send ``payload`` and half-close while reading everything the other side sends."""
    reader, writer = streams

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    received = await reader.read(-1)
    await sender
    writer.close()
    return received


async def wait_for(condition: Callable[[], bool], *, step: float = 0.01) -> None:
    """Poll ``condition`` until it holds (the caller's ``run`` bound ends a hang)."""
    while not condition():
        await asyncio.sleep(step)


async def read_closed(reader: asyncio.StreamReader) -> bytes:
    """Read until the connection ends; a reset counts as an end."""
    try:
        return await reader.read(-1)
    except ConnectionError:
        return b""
