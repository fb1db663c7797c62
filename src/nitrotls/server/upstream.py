"""Keep-alive connections to the upstream HTTP server, and the protocol that reads its answers.

An :class:`UpstreamConnection` belongs to one client exchange at a time; between exchanges it
rests in the :class:`UpstreamPool` (last in, first out, so the warmest socket is reused and
surplus ones age out). Everything it reads is handed to its :class:`ResponseSink`.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import Final, Protocol, cast

from nitrotls.server.http1 import (
    CHUNKED,
    LENGTH,
    MAX_HEAD,
    NONE,
    ChunkedDecoder,
    ProtocolError,
    ResponseHead,
    parse_response,
)

log = logging.getLogger(__name__)


class ResponseSink(Protocol):
    """The client side of an exchange, fed by the upstream connection."""

    def on_response_head(self, response: ResponseHead, body: bytes, done: bool) -> None: ...

    def on_response_body(self, body: bytes, done: bool) -> None: ...

    def on_interim(self, head: bytes) -> None: ...

    def on_upgrade(self, response: ResponseHead, rest: bytes) -> None: ...

    def on_tunnel_data(self, data: bytes) -> None: ...

    def on_tunnel_closed(self, clean: bool) -> None: ...

    def on_upstream_failed(self, received_any: bool) -> None: ...

    def request_sent(self) -> bool:
        """Whether the whole request reached upstream: only then may the socket be reused."""
        ...

    def pause_client(self) -> None: ...

    def resume_client(self) -> None: ...


_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2
_TUNNEL: Final = 3
_CLOSED: Final = 4

# More 1xx heads than this before a final answer is a broken (or hostile) upstream.
MAX_INTERIM: Final = 32


class UpstreamTransport(Protocol):
    """What is used of the event loop's transport to upstream."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def is_closing(self) -> bool: ...

    def is_reading(self) -> bool: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def can_write_eof(self) -> bool: ...

    def write_eof(self) -> None: ...


class UpstreamConnection:
    """One connection to upstream; parses exactly one response per exchange (an
    ``asyncio.Protocol`` by its methods; no asyncio base class, so that it compiles to a native
    class)."""

    __slots__ = (
        "_buffer",
        "_decoder",
        "_framing",
        "_interim",
        "_received",
        "_remaining",
        "_reusable",
        "_until_close",
        "idle_since",
        "method",
        "pool",
        "reused",
        "sink",
        "state",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: UpstreamTransport | None = None
        self.sink: ResponseSink | None = None
        self.state = _IDLE
        self.method = b"GET"
        self.reused = False
        self.idle_since = 0.0
        self._interim = 0
        self._buffer = b""
        self._received = False
        self._remaining = 0
        self._decoder: ChunkedDecoder | None = None
        self._framing = NONE
        self._until_close = False
        self._reusable = True

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: UpstreamTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        state, self.state = self.state, _CLOSED
        self.pool.forget(self)
        sink, self.sink = self.sink, None
        if sink is None:
            return
        if state == _BODY and self._until_close:
            sink.on_response_body(b"", True)
        elif state == _TUNNEL:  # upstream ended the tunnel: an error only if it broke it
            sink.on_tunnel_closed(exc is None)
        elif state in (_HEAD, _BODY):
            sink.on_upstream_failed(self._received)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.pause_client()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.resume_client()

    def data_received(self, data: bytes) -> None:
        self._received = True
        state = self.state
        if state == _HEAD:
            self._head(data)
        elif state == _BODY:
            self._body(data)
        elif state == _TUNNEL:
            if self.sink is not None:
                self.sink.on_tunnel_data(data)
        else:
            # Bytes from an idle connection: upstream is confused; never reuse it.
            self.close()

    def eof_received(self) -> bool | None:
        return None

    # -- exchanges -------------------------------------------------------------------------
    def begin(self, sink: ResponseSink, method: bytes, data: bytes) -> None:
        """Start an exchange: send ``data`` (the request head, maybe some body)."""
        self.sink = sink
        self.method = method
        self.state = _HEAD
        self._received = False
        self._reusable = True
        self._interim = 0
        if self.transport is not None:
            self.transport.write(data)

    def write(self, data: bytes) -> None:
        if self.transport is not None and self.state != _CLOSED:
            self.transport.write(data)

    def close(self) -> None:
        self.sink = None
        self.state = _CLOSED
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.sink = None
        self.state = _CLOSED
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def start_tunnel(self) -> None:
        self.state = _TUNNEL
        self._reusable = False

    def _head(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        while True:  # once per 1xx interim head, then once for the final head
            end = buffer.find(b"\r\n\r\n")
            if end < 0 or end > MAX_HEAD:
                if len(buffer) > MAX_HEAD:
                    self._fail()
                else:
                    self._buffer = buffer
                return
            self._buffer = b""
            try:
                response = parse_response(buffer[:end], self.method)
            except ProtocolError as error:
                log.warning("upstream answered with a bad response head: %s", error)
                self._fail()
                return
            sink = self.sink
            if sink is None:
                self.close()
                return
            if response.status >= 200:
                break
            rest = buffer[end + 4 :]
            if response.status == 101:
                self.start_tunnel()
                sink.on_upgrade(response, rest)
                return
            self._interim += 1
            if self._interim > MAX_INTERIM:
                log.warning("upstream sent more than %d interim (1xx) responses", MAX_INTERIM)
                self._fail()
                return
            sink.on_interim(buffer[: end + 4])
            if not rest or self.sink is not sink:
                return
            buffer = rest
        self._reusable = response.keep_alive
        framing = self._framing = response.framing
        self._until_close = False
        start = end + 4
        if framing == LENGTH:
            length = response.length
            if len(buffer) - start >= length:  # the usual case: the whole body is here
                self.state = _IDLE
                self.sink = None
                # Back in the pool before the client's next request; bytes beyond the
                # response mean upstream cannot be trusted on this socket again.
                if self._reusable and len(buffer) == start + length and sink.request_sent():
                    self.pool.give_back(self)
                else:
                    self.close()
                sink.on_response_head(response, buffer[start : start + length], True)
                return
            self.state = _BODY
            self._remaining = length - (len(buffer) - start)
            sink.on_response_head(response, buffer[start:], False)
            return
        if framing == NONE:
            self._finish_exchange(buffer[start:])
            self._maybe_release()
            sink.on_response_head(response, b"", True)
            return
        self.state = _BODY
        rest = buffer[start:]
        if framing == CHUNKED:
            self._decoder = ChunkedDecoder()
            body, done = self._take_chunked(rest) if rest else (b"", False)
            if self.state == _CLOSED:
                return
            if done:
                self._maybe_release()
            sink.on_response_head(response, body, done)
            return
        self._until_close = True
        sink.on_response_head(response, rest, False)

    def _body(self, data: bytes) -> None:
        sink = self.sink
        if self._framing == LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                if sink is not None:
                    sink.on_response_body(data, False)
                return
            self._remaining = 0
            self._finish_exchange(data[remaining:])
            body, done = data[:remaining], True
        elif self._framing == CHUNKED:
            body, done = self._take_chunked(data)
            if self.state == _CLOSED:
                return
        else:
            body, done = data, False
        if done:
            self._maybe_release()
        if sink is not None:
            sink.on_response_body(body, done)

    def _take_chunked(self, data: bytes) -> tuple[bytes, bool]:
        decoder = self._decoder
        assert decoder is not None
        out: list[bytes] = []
        try:
            rest = decoder.feed(data, out)
        except ProtocolError as error:
            log.warning("upstream sent a bad chunked body: %s", error)
            self._reusable = False
            self.abort_exchange()
            return b"", False
        body = b"".join(out) if len(out) != 1 else out[0]
        if decoder.done:
            self._decoder = None
            self._finish_exchange(rest)
            return body, True
        return body, False

    def _finish_exchange(self, rest: bytes) -> None:
        self.state = _IDLE
        if rest:
            self._reusable = False  # bytes beyond the response: never trust this socket again

    def _maybe_release(self) -> None:
        if self.state != _IDLE:
            return
        sink, self.sink = self.sink, None
        # A request whose body did not all go up (early answer, 100-continue never sent) would
        # have its remains read as the next client's request: such a socket is never reused.
        if self._reusable and sink is not None and sink.request_sent():
            self.pool.give_back(self)
        else:
            self.close()

    def abort_exchange(self) -> None:
        """Upstream broke the protocol mid-body: cut both sides."""
        sink, self.sink = self.sink, None
        self.abort()
        if sink is not None:
            sink.on_upstream_failed(True)

    def _fail(self) -> None:
        sink, self.sink = self.sink, None
        received = self._received
        self.abort()
        if sink is not None:
            sink.on_upstream_failed(received)


class UpstreamPool:
    """Idle keep-alive connections to one upstream ``host:port`` (or Unix socket)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_idle: int = 256,
        idle_timeout: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self._idle: list[UpstreamConnection] = []
        self._all: set[UpstreamConnection] = set()
        self.clock = monotonic()  # advanced by sweep(): rest times need no finer grain

    def send(self, sink: ResponseSink, method: bytes, data: bytes) -> UpstreamConnection | None:
        """Begin an exchange on a rested connection (last in, first out); ``None`` if there is
        none, then :meth:`connect`. It does what :meth:`UpstreamConnection.begin` does, inline:
        this runs once per proxied request."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if conn.state == _IDLE and transport is not None and not transport.is_closing():
                conn.reused = True
                conn.sink = sink
                conn.method = method
                conn.state = _HEAD
                conn._received = False
                conn._reusable = True
                conn._interim = 0
                transport.write(data)
                return conn
        return None

    async def connect(self) -> UpstreamConnection:
        """A new connection; raises ``OSError`` or ``TimeoutError`` when upstream is down."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(
                lambda: cast("asyncio.Protocol", UpstreamConnection(self)), self.host, self.port
            )
        assert isinstance(conn, UpstreamConnection)
        conn.reused = False
        self._all.add(conn)
        return conn

    def give_back(self, conn: UpstreamConnection) -> None:
        if len(self._idle) >= self.max_idle:
            conn.close()
            return
        transport = conn.transport
        if transport is not None and not transport.is_reading():
            # Paused for the client it served (back-pressure, e.g. during 1xx heads): a
            # rested connection reads, so its next user gets its answer and a close is seen.
            transport.resume_reading()
        conn.idle_since = self.clock
        self._idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        self._all.discard(conn)

    def sweep(self, now: float) -> None:
        """Close connections that rested longer than ``idle_timeout``."""
        self.clock = now
        limit = now - self.idle_timeout
        if self._idle and self._idle[0].idle_since < limit:
            keep = [c for c in self._idle if c.idle_since >= limit]
            for conn in self._idle:
                if conn.idle_since < limit:
                    conn.close()
            self._idle = keep

    def close_all(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
