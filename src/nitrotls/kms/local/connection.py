"""Client connections of the local KMS: one event loop, one thread, requests answered inline.

Why not a thread per connection: the work per request holds the interpreter lock (the
attestation signature check does not release it), so threads could never run requests in
parallel; with eight busy clients they only handed the lock back and forth (about 65 futex calls
per request, against about 8 system calls in all now), and the server spent ~0.9 ms of CPU per
Decrypt with a Recipient against ~0.75 ms here (bench/kms.py). Here a request is read from
whatever the kernel has delivered, handed to :class:`KMSService` the moment it is complete, and
its answer written with one call. The work per request is short (under a millisecond), so
serving one at a time costs little latency; a client pipelining many requests is served
:data:`BURST` at a time, taking turns with the others.

Bounded everywhere a client could make the server wait or grow: the request head (line length,
header count), the body (413 past ``max_request_bytes``), the time to send a whole request and
to stay idle (``request_timeout``), a client that does not read its answers (reading stops while
answers queue; the connection is dropped when they do not drain in time), and the number of
connections (503 Throttling beyond ``max_connections``). A refused request is answered, the
sending side closed, and the rest of what the client sends discarded for a moment before the
socket closes, so the answer is not destroyed by a TCP reset.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from random import getrandbits
from typing import cast
from urllib.parse import urlsplit

from nitrotls.kms.local import http11
from nitrotls.kms.local.fields import uuid_text
from nitrotls.kms.local.service import KMSService
from nitrotls.kms.local.sigv4 import WireRequest

log = logging.getLogger("nitrotls.kms.local")
CONTENT_TYPE = "application/x-amz-json-1.1"
LINGER_SECONDS = 1.0  # how long a refused client may keep sending before the socket closes
BURST = 16  # pipelined requests answered in a row before other connections get a turn
_NOT_POST = "The KMS API is POST / with an X-Amz-Target header."


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"__type": code, "message": message}).encode()


class Hub:
    """What the connections share: the service, the limits, and the set of open connections.

    A periodic sweep (not a timer per request) enforces the deadlines.
    """

    def __init__(
        self,
        service: KMSService,
        *,
        request_timeout: float,
        max_request_bytes: int,
        max_connections: int,
    ) -> None:
        self.service = service
        self.request_timeout = request_timeout
        self.max_request_bytes = max_request_bytes
        self.max_connections = max_connections
        self.connections: set[Connection] = set()
        self.active = 0  # connections being served (turned-away ones are not counted)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._stopping = False

    def protocol(self) -> Connection:
        return Connection(self)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._schedule_sweep()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        interval = min(1.0, max(0.02, self.request_timeout / 5))
        self._sweeper = self._loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        now = time.monotonic()
        for connection in list(self.connections):
            if connection.deadline <= now:
                connection.expire()
        self._schedule_sweep()

    def stop(self, server: asyncio.AbstractServer, grace: float) -> None:
        """Stop accepting, close every connection (answers already queued are still sent),
        then stop the loop once all are gone or ``grace`` seconds have passed."""
        assert self._loop is not None
        self._stopping = True
        server.close()
        for connection in list(self.connections):
            connection.shutdown()
        self._wait_closed(self._loop.time() + grace)

    def _wait_closed(self, deadline: float) -> None:
        assert self._loop is not None
        if self.connections and self._loop.time() < deadline:
            self._loop.call_later(0.02, self._wait_closed, deadline)
            return
        for connection in list(self.connections):
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._loop.call_soon(self._loop.stop)  # after the aborts' connection_lost callbacks


class Connection(asyncio.Protocol):
    """One client: requests read from a buffer and answered in order, kept alive until either
    side closes, the client idles past the timeout, or a request is refused."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._reader = http11.HeadReader()
        self._head: http11.RequestHead | None = None
        self._length = 0
        self._idle = True  # no byte of the next request has arrived yet
        self._paused = False  # the client is not reading its answers; neither do we
        self._yielded = False  # stopped after a burst; continues on the loop's next turn
        self._eof = False
        self._closing = False
        self._counted = False
        self.deadline = time.monotonic() + hub.request_timeout

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        hub = self._hub
        hub.connections.add(self)
        if hub.stopping:
            self.abort()
        elif hub.active >= hub.max_connections:
            body = error_body("ThrottlingException", "Too many connections; retry shortly.")
            self._refuse(503, body)
        else:
            self._counted = True
            hub.active += 1

    def connection_lost(self, exc: Exception | None) -> None:
        hub = self._hub
        hub.connections.discard(self)
        if self._counted:
            self._counted = False
            hub.active -= 1
        self._buffer.clear()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # a refused client's remaining bytes: discarded
        if self._idle:
            self._idle = False
            self.deadline = time.monotonic() + self._hub.request_timeout
        self._buffer += data
        self._process()

    def eof_received(self) -> bool:
        self._eof = True
        if self._closing:
            self._close()  # a refused client has stopped sending: done
        elif not (self._paused or self._yielded):
            self._finish_at_eof()
        return True  # we close (or first answer the requests already queued) ourselves

    def pause_writing(self) -> None:
        self._paused = True
        self.deadline = time.monotonic() + self._hub.request_timeout
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        self.deadline = time.monotonic() + self._hub.request_timeout
        if not self._yielded:  # else the scheduled continuation carries on
            self._carry_on()

    def _carry_on(self) -> None:
        """Read and answer again after a pause (answers not read) or a burst."""
        if self._closing or self._transport is None:
            return
        self._transport.resume_reading()
        self._process()
        if self._eof and not (self._closing or self._paused or self._yielded):
            self._finish_at_eof()

    def _after_burst(self) -> None:
        self._yielded = False
        if not self._paused:
            self._carry_on()

    # -- closing --------------------------------------------------------------------------

    def expire(self) -> None:
        """The deadline passed: idle too long, a request too slow, or answers not read."""
        if self._transport is None:
            return
        if self._paused or self._transport.get_write_buffer_size():
            self.abort()
        else:
            self._close()

    def shutdown(self) -> None:
        """The server is stopping: close an idle connection now (after any answer queued); one
        with part of a request in hand gets that request answered first (then closes, as
        :meth:`_answer` sees the hub stopping) unless the stop's grace period ends first."""
        if self._idle or self._paused:
            self._close()

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def _close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def _refuse(self, status: int, body: bytes) -> None:
        """Answer, close our side, and discard what the client still sends for a moment."""
        transport = self._transport
        if transport is None:
            return
        self._closing = True
        self._buffer.clear()
        transport.write(self._response(status, body, close=True))
        if self._eof or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.deadline = time.monotonic() + min(LINGER_SECONDS, self._hub.request_timeout)

    def _finish_at_eof(self) -> None:
        if self._head is None and (self._reader.started or self._buffer):
            message = "The connection closed inside the request headers."
            self._refuse(400, error_body("ValidationException", message))
        else:
            self._close()  # between requests, or inside a body: nothing to answer

    # -- requests -------------------------------------------------------------------------

    def _process(self) -> None:
        answered = 0
        try:
            while not (self._paused or self._closing or self._yielded):
                if self._head is None and not (self._buffer and self._read_head()):
                    return
                if len(self._buffer) < self._length:
                    return
                self._answer()
                answered += 1
                if answered == BURST and self._buffer:
                    self._take_turns()
        except http11.HTTPRequestError as problem:
            self._refuse(problem.status, error_body(problem.code, problem.message))
        except Exception:
            log.exception("unexpected error on a local KMS connection")
            self.abort()

    def _take_turns(self) -> None:
        """A client pipelining many requests must not hold the loop: pause, let the loop
        serve the others, continue on its next turn."""
        assert self._transport is not None
        self._yielded = True
        self._transport.pause_reading()
        asyncio.get_running_loop().call_soon(self._after_burst)

    def _read_head(self) -> bool:
        """True once a request head is complete and its body length known."""
        start, head = self._reader.feed(self._buffer, 0)
        if start:
            del self._buffer[:start]
        if head is None:
            return False
        if head.method != "POST":
            raise http11.HTTPRequestError(405, "UnknownOperationException", _NOT_POST)
        self._length = http11.content_length(head, self._hub.max_request_bytes)
        self._head = head
        if head.headers.get("expect", "").lower() == "100-continue":
            assert self._transport is not None
            self._transport.write(http11.CONTINUE)
        return True

    def _answer(self) -> None:
        head, self._head = self._head, None
        assert head is not None and self._transport is not None
        body = self._take_body()
        path, query = _split_target(head.target)
        answer = self._hub.service.handle(WireRequest(head.method, path, query, head.headers, body))
        keep_alive = head.keep_alive and not self._hub.stopping
        self._transport.write(self._response(answer.status, answer.body, close=not keep_alive))
        if not keep_alive:
            self._close()
            return
        self._idle = not self._buffer and not self._reader.started
        self.deadline = time.monotonic() + self._hub.request_timeout

    def _take_body(self) -> bytes:
        """The body, removed from the buffer; copied once when it is all the buffer holds (the
        usual case: a client sends one request and waits for its answer)."""
        buffer, length = self._buffer, self._length
        if len(buffer) == length:
            body = bytes(buffer)
            buffer.clear()
            return body
        body = bytes(buffer[:length])
        del buffer[:length]
        return body

    @staticmethod
    def _response(status: int, body: bytes, *, close: bool) -> bytes:
        headers = f"{_FIXED_HEADERS}x-amzn-RequestId: {request_id()}\r\n"
        return http11.rendered_response(status, body, headers, close=close)


_FIXED_HEADERS = http11.header_lines({"Server": "nitrotls-kms", "Content-Type": CONTENT_TYPE})
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # version and variant bits
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def request_id() -> str:
    """A random (version 4) UUID's text, as ``str(uuid.UUID(int=bits, version=4))`` gives.

    A request id needs to be unique, not secret: no system call for fresh randomness. Formatted
    directly from the bits, a third of what building a ``uuid.UUID`` costs (every answer has one).
    """
    return uuid_text(f"{getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}")


def _split_target(target: str) -> tuple[str, str]:
    """Path and query of the request target (``/`` from every KMS client: skip the parser)."""
    if target == "/":
        return "/", ""
    parts = urlsplit(target)
    return parts.path, parts.query
