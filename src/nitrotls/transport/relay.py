"""Byte-for-byte relaying between two stream pairs, with half-close and an idle timeout.

When one side sends EOF we shut down the *write* side of the other (``write_eof``) and keep
relaying the opposite direction until it ends too, so request/response protocols that signal
"done sending" with a half-close (and TLS close_notify followed by FIN) work through the proxy.
A reset or error on either side aborts both. No byte is inspected or altered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHUNK = 64 * 1024


class IdleTimer:
    """Tracks the last activity of a connection; :meth:`expired` returns once it went quiet."""

    def __init__(self, timeout: float, clock: Callable[[], float]) -> None:
        self.timeout = timeout
        self._clock = clock
        self._last = clock()

    def touch(self) -> None:
        self._last = self._clock()

    def remaining(self) -> float:
        """Seconds until the connection counts as idle (zero or less: it is)."""
        return self._last + self.timeout - self._clock()

    async def expired(self) -> None:
        while (left := self.remaining()) > 0:
            await asyncio.sleep(left)


@dataclass(frozen=True)
class RelayResult:
    """What a finished relay moved and why it ended (``"closed"``, ``"idle"``, ``"error"``)."""

    sent: int
    received: int
    outcome: str
    detail: str = ""


async def relay(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    *,
    idle_timeout: float | None = None,
) -> RelayResult:
    """Relay until both directions end, one fails, or nothing moves for ``idle_timeout``.

    ``sent`` counts client→upstream bytes, ``received`` upstream→client. On a clean end the
    writers are left for the caller to close; after an idle timeout or an error both are aborted.
    """
    loop = asyncio.get_running_loop()
    timer = IdleTimer(idle_timeout, loop.time) if idle_timeout else None
    counts = [0, 0]
    pumps: set[asyncio.Future[Any]] = {
        asyncio.ensure_future(_pump(client[0], upstream[1], timer, counts, 0)),
        asyncio.ensure_future(_pump(upstream[0], client[1], timer, counts, 1)),
    }
    watchdog = asyncio.ensure_future(timer.expired()) if timer else None
    outcome, detail = await _supervise(pumps, watchdog)
    if outcome != "closed":
        client[1].transport.abort()
        upstream[1].transport.abort()
    return RelayResult(counts[0], counts[1], outcome, detail)


async def _supervise(
    pumps: set[asyncio.Future[Any]], watchdog: asyncio.Future[Any] | None
) -> tuple[str, str]:
    everything = pumps | ({watchdog} if watchdog else set())
    pending = set(pumps)
    try:
        while pending:
            waiting = pending | ({watchdog} if watchdog else set())
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if watchdog is not None and watchdog in done:
                return "idle", ""
            pending -= done
            for task in done:
                error = task.exception()
                if error is not None:
                    return "error", f"{type(error).__name__}: {error}"
        return "closed", ""
    finally:
        for task in everything:
            task.cancel()
        await asyncio.gather(*everything, return_exceptions=True)


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    timer: IdleTimer | None,
    counts: list[int],
    index: int,
) -> None:
    while data := await reader.read(CHUNK):
        if timer is not None:
            timer.touch()
        writer.write(data)
        counts[index] += len(data)
        await writer.drain()
    if writer.can_write_eof() and not writer.is_closing():
        writer.write_eof()


async def close_writer(writer: asyncio.StreamWriter, *, timeout: float = 5.0) -> None:
    """Close ``writer``, waiting briefly for buffered bytes to go out; aborts on any trouble."""
    try:
        writer.close()
        async with asyncio.timeout(timeout):
            await writer.wait_closed()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise
    except Exception:
        writer.transport.abort()
