"""The TLS-terminating HTTP/1.1 reverse proxy: one :class:`ProxyConnection` per client.

Written as an ``asyncio.Protocol`` (no streams, no task per request) because this is the hot
path the benchmark measures. A connection handles one exchange at a time: the request head is
parsed strictly, the request is re-framed towards a pooled keep-alive upstream connection with
``X-Forwarded-For/Proto/Host`` set by us (client-sent ones are dropped: the client is not
trusted), and the response is re-framed towards the client. Pipelined requests wait in a bounded
buffer. Timeouts are deadlines checked by the listener's sweeper, not one timer per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nitrotls.server.attest import AttestationResponder, LocalResponse, error_response
from nitrotls.server.http1 import (
    CHUNKED,
    LAST_CHUNK,
    LENGTH,
    MAX_HEAD,
    NONE,
    ChunkedDecoder,
    ProtocolError,
    RequestHead,
    ResponseHead,
    chunk,
    parse_request,
)
from nitrotls.server.identity import Served
from nitrotls.server.metrics import Metrics
from nitrotls.server.upstream import UpstreamConnection, UpstreamPool

if TYPE_CHECKING:
    from nitrotls.server.listener import ConnectionRegistry

log = logging.getLogger(__name__)

INF = float("inf")
_MAX_PENDING = 256 * 1024

# Request side states.
_IDLE, _HEAD, _BODY, _DONE, _TUNNEL = range(5)
# Response side states.
_R_NONE, _R_WAIT, _R_STREAM, _R_LOCAL = range(4)
# Reasons to stop reading from the client (a bit set).
_P_UPSTREAM, _P_PIPELINE, _P_PENDING = 1, 2, 4


@dataclass(frozen=True)
class ProxySettings:
    """Timeouts (seconds) and limits of the reverse proxy."""

    header_timeout: float = 10.0  # from the first byte of a request head to its end
    idle_timeout: float = 60.0  # keep-alive wait for the next request
    body_timeout: float = 30.0  # longest silence while a request body is being sent
    upstream_timeout: float = 60.0  # longest silence from upstream (first byte, then between)
    forwarded_proto: bytes = b"https"


@dataclass
class ProxyEngine:
    """What every connection of one listener shares."""

    settings: ProxySettings
    pool: UpstreamPool
    metrics: Metrics
    attestation: AttestationResponder | None
    upstream_host: bytes
    registry: ConnectionRegistry | None = None
    draining: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def factory(self, served: Served, peer: str) -> ProxyConnection:
        return ProxyConnection(self, served, peer)


class ProxyConnection(asyncio.Protocol):
    """One client connection of the reverse proxy."""

    def __init__(self, engine: ProxyEngine, served: Served, peer: str) -> None:
        self.engine = engine
        self.served = served
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.deadline = INF
        self._buf = b""
        self._req = _IDLE
        self._resp = _R_NONE
        self._request: RequestHead | None = None
        self._upstream: UpstreamConnection | None = None
        self._keep_alive = True
        self._rechunk = False
        self._body_remaining = 0
        self._decoder: ChunkedDecoder | None = None
        self._pending: list[bytes] | None = None
        self._pending_size = 0
        self._retry: bytes | None = None
        self._paused = 0
        self._closed = False
        self._forwarded = (
            b"X-Forwarded-For: " + peer.encode("ascii", "replace") + b"\r\n"
            b"X-Forwarded-Proto: " + engine.settings.forwarded_proto + b"\r\n"
        )

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.deadline = time.monotonic() + self.engine.settings.idle_timeout
        if self.engine.registry is not None:
            self.engine.registry.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.deadline = INF
        self._pending = None
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.abort()
        if self.engine.registry is not None:
            self.engine.registry.closed(self)

    def pause_writing(self) -> None:
        if self._upstream is not None:
            self._upstream.pause_reading()

    def resume_writing(self) -> None:
        if self._upstream is not None:
            self._upstream.resume_reading()

    def eof_received(self) -> bool | None:
        if self._req == _TUNNEL and self._upstream is not None:
            transport = self._upstream.transport
            if transport is not None and transport.can_write_eof():
                transport.write_eof()
                return True
        return None

    def data_received(self, data: bytes) -> None:
        req = self._req
        if req == _BODY:
            self._on_body(data)
        elif req == _TUNNEL:
            if self._upstream is not None:
                self._upstream.write(data)
        elif req == _DONE:
            self._buf += data
            if len(self._buf) > MAX_HEAD:
                self._pause(_P_PIPELINE)
        else:
            self._on_head_bytes(data)

    # -- listener hooks ----------------------------------------------------------------------
    def expire(self) -> None:
        """The current deadline passed: answer what can be answered, then close."""
        self.deadline = INF
        if self._closed:
            return
        if self._req == _IDLE and self._resp == _R_NONE:
            self._close()
            return
        self.engine.metrics.timeouts += 1
        if self._resp in (_R_NONE, _R_WAIT):
            status = 504 if self._req == _DONE else 408
            if status == 504:
                self.engine.metrics.upstream_errors += 1
            self._drop_upstream()
            self._send_error(status)
        else:
            self._abort()

    def drain(self) -> None:
        """Graceful shutdown: idle connections close now, busy ones after their response."""
        self._keep_alive = False
        if self._req == _IDLE and self._resp == _R_NONE and not self._closed:
            self._close()

    @property
    def busy(self) -> bool:
        return not (self._req == _IDLE and self._resp == _R_NONE)

    # -- requests ----------------------------------------------------------------------------
    def _on_head_bytes(self, data: bytes) -> None:
        buffer = self._buf + data if self._buf else data
        if self._req == _IDLE:
            if buffer.startswith(b"\r\n"):
                buffer = buffer.lstrip(b"\r\n")
                if not buffer:
                    return
            self._req = _HEAD
            self.deadline = time.monotonic() + self.engine.settings.header_timeout
        end = buffer.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD:
            if len(buffer) > MAX_HEAD:
                self._buf = b""
                self._send_error(431)
            else:
                self._buf = buffer
            return
        self._buf = b""
        try:
            request = parse_request(buffer[:end])
        except ProtocolError as error:
            log.debug("bad request from %s: %s", self.peer, error)
            self._send_error(error.status)
            return
        self.engine.metrics.requests += 1
        self._start(request, buffer[end + 4 :])

    def _start(self, request: RequestHead, rest: bytes) -> None:
        engine = self.engine
        self._request = request
        self._keep_alive = request.keep_alive and not engine.draining
        attestation = engine.attestation
        if attestation is not None and attestation.matches(request.target):
            self._local(request, rest)
            return
        self._resp = _R_WAIT
        head = self._upstream_head(request)
        out = [head]
        if request.framing == LENGTH:
            self._req = _BODY
            self._body_remaining = request.length
        elif request.framing == CHUNKED:
            self._req = _BODY
            self._decoder = ChunkedDecoder()
        else:
            self._req = _DONE
        if self._req == _BODY:
            self.deadline = time.monotonic() + engine.settings.body_timeout
            if rest:
                rest = self._take_body(rest, out)
        else:
            self.deadline = time.monotonic() + engine.settings.upstream_timeout
        if self._closed:
            return
        self._buf = rest
        data = b"".join(out) if len(out) > 1 else head
        upstream = engine.pool.take()
        if upstream is not None:
            self._attach(upstream, data)
        else:
            self._pending = [data]
            self._pending_size = len(data)
            engine.spawn(self._connect())

    def _upstream_head(self, request: RequestHead) -> bytes:
        host = request.host if request.host is not None else self.engine.upstream_host
        lines = [
            request.method + b" " + request.target + b" HTTP/1.1\r\nHost: " + host,
            *request.fields,
        ]
        head = b"\r\n".join(lines) + b"\r\n" + self._forwarded + b"X-Forwarded-Host: " + host
        if request.framing == LENGTH:
            head += b"\r\nContent-Length: %d" % request.length
        elif request.framing == CHUNKED:
            head += b"\r\nTransfer-Encoding: chunked"
        if request.expect_continue:
            head += b"\r\nExpect: 100-continue"
        if request.upgrade is not None:
            head += b"\r\nConnection: upgrade\r\nUpgrade: " + request.upgrade
        return head + b"\r\n\r\n"

    def _on_body(self, data: bytes) -> None:
        out: list[bytes] = []
        rest = self._take_body(data, out)
        if self._closed:
            return
        if out:
            self._send_up(b"".join(out) if len(out) > 1 else out[0])
        if rest:
            self._buf += rest
            if len(self._buf) > MAX_HEAD:
                self._pause(_P_PIPELINE)

    def _take_body(self, data: bytes, out: list[bytes]) -> bytes:
        """Move request body bytes from ``data`` to ``out``; return what lies beyond the body."""
        now = time.monotonic()
        if self._decoder is None:
            remaining = self._body_remaining
            if len(data) < remaining:
                out.append(data)
                self._body_remaining = remaining - len(data)
                self.deadline = now + self.engine.settings.body_timeout
                return b""
            out.append(data[:remaining])
            self._body_remaining = 0
            self._request_done(now)
            return data[remaining:]
        pieces: list[bytes] = []
        try:
            rest = self._decoder.feed(data, pieces)
        except ProtocolError as error:
            log.debug("bad chunked body from %s: %s", self.peer, error)
            self._drop_upstream()
            self._send_error(400)
            return b""
        out.extend(chunk(piece) for piece in pieces if piece)
        if self._decoder.done:
            out.append(LAST_CHUNK)
            self._decoder = None
            self._request_done(now)
            return rest
        self.deadline = now + self.engine.settings.body_timeout
        return b""

    def _request_done(self, now: float) -> None:
        self._req = _DONE
        if self._resp == _R_WAIT:
            self.deadline = now + self.engine.settings.upstream_timeout

    def _send_up(self, data: bytes) -> None:
        if self._upstream is not None:
            self._upstream.write(data)
        elif self._pending is not None:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > _MAX_PENDING:
                self._pause(_P_PENDING)

    async def _connect(self) -> None:
        try:
            upstream = await self.engine.pool.connect()
        except (OSError, TimeoutError) as error:
            log.warning("upstream %s:%s unreachable: %s", *self._pool_address(), error)
            self._upstream_down()
            return
        if self._closed or self._pending is None:
            upstream.close()
            return
        data = b"".join(self._pending)
        self._pending = None
        self._pending_size = 0
        self._resume(_P_PENDING)
        self._attach(upstream, data)

    def _pool_address(self) -> tuple[str, int]:
        return self.engine.pool.host, self.engine.pool.port

    def _attach(self, upstream: UpstreamConnection, data: bytes) -> None:
        self._upstream = upstream
        request = self._request
        assert request is not None
        replayable = upstream.reused and request.framing == NONE and request.upgrade is None
        self._retry = data if replayable else None
        upstream.begin(self, request.method, data)

    # -- responses (called by the upstream connection) ----------------------------------------
    def on_response_head(self, response: ResponseHead, body: list[bytes], done: bool) -> None:
        if self._closed or self.transport is None:
            return
        self._resp = _R_STREAM
        self._retry = None
        request = self._request
        assert request is not None
        if self._req == _BODY:
            self._keep_alive = False  # answered before the request ended: do not resync
        framing = self._client_framing(response, request)
        lines = [b"HTTP/1.1" + response.status_line[8:], *response.fields]
        head = b"\r\n".join(lines) + b"\r\n" + framing
        if not self._keep_alive:
            head += b"Connection: close\r\n"
        out = [head + b"\r\n"]
        self._append_body(out, body, done)
        self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if done:
            self._response_done()
        else:
            self.deadline = time.monotonic() + self.engine.settings.upstream_timeout

    def _client_framing(self, response: ResponseHead, request: RequestHead) -> bytes:
        self._rechunk = False
        if response.framing == LENGTH:
            return b"Content-Length: %d\r\n" % response.length
        if response.framing == NONE:
            bodiless = response.status in (204, 304) or request.method == b"HEAD"
            return b"" if bodiless else b"Content-Length: 0\r\n"
        if request.minor == 1:
            self._rechunk = True
            return b"Transfer-Encoding: chunked\r\n"
        self._keep_alive = False  # HTTP/1.0 client: the end of the body is the end of the line
        return b""

    def _append_body(self, out: list[bytes], body: list[bytes], done: bool) -> None:
        if self._rechunk:
            out.extend(chunk(piece) for piece in body if piece)
            if done:
                out.append(LAST_CHUNK)
        else:
            out.extend(body)

    def on_response_body(self, body: list[bytes], done: bool) -> None:
        if self._closed or self.transport is None:
            return
        out: list[bytes] = []
        self._append_body(out, body, done)
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if done:
            self._response_done()
        else:
            self.deadline = time.monotonic() + self.engine.settings.upstream_timeout

    def on_interim(self, head: bytes) -> None:
        request = self._request
        if self.transport is not None and request is not None and request.minor == 1:
            self.transport.write(head)

    def on_upgrade(self, response: ResponseHead, rest: bytes) -> None:
        request = self._request
        if self.transport is None or request is None or request.upgrade is None:
            self._drop_upstream()
            self._upstream_down()
            return
        lines = [b"HTTP/1.1" + response.status_line[8:], *response.fields]
        upgrade = response.upgrade or request.upgrade
        head = b"\r\n".join(lines) + b"\r\nConnection: upgrade\r\nUpgrade: " + upgrade
        self.transport.write(head + b"\r\n\r\n" + rest)
        self._req = _TUNNEL
        self._resp = _R_STREAM
        self.deadline = INF
        if self._buf and self._upstream is not None:
            self._upstream.write(self._buf)
        self._buf = b""

    def on_tunnel_data(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    def on_upstream_failed(self, received_any: bool) -> None:
        self._upstream = None
        if self._closed:
            return
        if self._resp == _R_WAIT and not received_any and self._retry is not None:
            data, self._retry = self._retry, None
            self._pending = [data]
            self._pending_size = len(data)
            self.engine.spawn(self._connect())
            return
        if self._resp == _R_WAIT:
            self._upstream_down()
        else:
            self._abort()

    def pause_client(self) -> None:
        self._pause(_P_UPSTREAM)

    def resume_client(self) -> None:
        self._resume(_P_UPSTREAM)

    def _upstream_down(self) -> None:
        self.engine.metrics.upstream_errors += 1
        self._send_error(502)

    def _response_done(self) -> None:
        self._resp = _R_NONE
        self._upstream = None
        self._request = None
        if self._req != _DONE or not self._keep_alive or self.engine.draining:
            self._close()
            return
        self._req = _IDLE
        self.deadline = time.monotonic() + self.engine.settings.idle_timeout
        self._resume(_P_PIPELINE)
        if self._buf:
            data, self._buf = self._buf, b""
            self._on_head_bytes(data)

    # -- answers nitrotls gives itself --------------------------------------------------------
    def _local(self, request: RequestHead, rest: bytes) -> None:
        if request.framing != NONE:
            self._send_error(400)
            return
        self._req = _DONE
        self._resp = _R_LOCAL
        self._buf = rest
        self.deadline = INF
        self.engine.spawn(self._answer_attestation(request))

    async def _answer_attestation(self, request: RequestHead) -> None:
        attestation = self.engine.attestation
        assert attestation is not None
        accept = _header(request.fields, b"accept")
        response = await attestation.respond(
            request.method, request.target, accept, self.served.identity, self.peer
        )
        self._write_local(response, head_only=request.method == b"HEAD")

    def _write_local(self, response: LocalResponse, *, head_only: bool = False) -> None:
        if self._closed or self.transport is None:
            return
        keep = self._keep_alive and not self.engine.draining
        self.transport.write(response.render(keep_alive=keep, head_only=head_only))
        self._resp = _R_NONE
        self._response_done()

    def _send_error(self, status: int) -> None:
        """Answer ``status`` with a fixed body and close: the stream cannot be trusted."""
        self._keep_alive = False
        self._req = _DONE
        self._resp = _R_NONE
        if self.transport is not None and not self._closed:
            self.transport.write(error_response(status).render(keep_alive=False))
        self._close()

    # -- plumbing ------------------------------------------------------------------------------
    def _pause(self, reason: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.transport is not None and not self._closed:
                self.transport.resume_reading()

    def _drop_upstream(self) -> None:
        upstream, self._upstream = self._upstream, None
        self._pending = None
        if upstream is not None:
            upstream.abort()

    def _close(self) -> None:
        self.deadline = INF
        if self.transport is not None and not self._closed:
            self._closed = True
            self.transport.close()

    def _abort(self) -> None:
        self._drop_upstream()
        self.deadline = INF
        if self.transport is not None and not self._closed:
            self._closed = True
            self.transport.abort()


def _header(fields: list[bytes], name: bytes) -> bytes | None:
    """The value of the first field called ``name`` (lower case) among forwarded lines."""
    size = len(name)
    for line in fields:
        if line[size : size + 1] == b":" and line[:size].lower() == name:
            return line[size + 1 :].strip(b" \t")
    return None
