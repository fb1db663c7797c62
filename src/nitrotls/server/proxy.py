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
from dataclasses import dataclass, field, replace
from time import monotonic
from typing import TYPE_CHECKING, Final, Protocol

from nitrotls.server.attest import (
    ATTESTATION_PATH,
    AttestationResponder,
    LocalResponse,
    error_response,
)
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
    header_value,
    parse_request,
)
from nitrotls.server.identity import Served
from nitrotls.server.metrics import Metrics
from nitrotls.server.tlsconn import TLSTransport
from nitrotls.server.upstream import UpstreamConnection, UpstreamPool

if TYPE_CHECKING:
    from nitrotls.server.listener import ConnectionRegistry

log = logging.getLogger(__name__)

INF: Final = float("inf")
_MAX_PENDING: Final = 256 * 1024

# Request side states.
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2
_DONE: Final = 3
_TUNNEL: Final = 4
# Response side states.
_R_NONE: Final = 0
_R_WAIT: Final = 1
_R_STREAM: Final = 2
_R_LOCAL: Final = 3
# Reasons to stop reading from the client (a bit set).
_P_UPSTREAM: Final = 1
_P_PIPELINE: Final = 2
_P_PENDING: Final = 4
# Only these may be sent again when a rested upstream dies unanswered (RFC 9110 §9.2.2).
_IDEMPOTENT: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
_KEEP_ALIVE_LINE: Final = b"Connection: keep-alive\r\n"


def _replayable(request: RequestHead) -> bool:
    """Whether ``request`` may be sent again on a fresh upstream when a rested one died
    unanswered: all of it is in hand (no body, no upgrade) and it is idempotent."""
    return request.framing == NONE and request.upgrade is None and request.method in _IDEMPOTENT


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

    def __post_init__(self) -> None:
        # Read on every request: plain attributes, one lookup each.
        self.proto_line = b"\r\nX-Forwarded-Proto: " + self.settings.forwarded_proto + b"\r\n"
        self.header_timeout = self.settings.header_timeout
        self.idle_timeout = self.settings.idle_timeout
        self.body_timeout = self.settings.body_timeout
        self.upstream_timeout = self.settings.upstream_timeout

    def spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def factory(self, served: Served, peer: str) -> ProxyConnection:
        return ProxyConnection(self, served, peer)


class ClientTransport(Protocol):
    """What the proxy uses of its client's transport (a :class:`TLSTransport` when serving)."""

    linger: bool

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class ProxyConnection:
    """One client connection of the reverse proxy (an ``asyncio.Protocol`` by its methods; no
    asyncio base class, so that it compiles to a native class)."""

    __slots__ = (
        "_body_remaining",
        "_buf",
        "_closed",
        "_decoder",
        "_forwarded",
        "_keep_alive",
        "_paused",
        "_pending",
        "_pending_size",
        "_rechunk",
        "_req",
        "_request",
        "_resp",
        "_retry",
        "_upstream",
        "deadline",
        "engine",
        "peer",
        "served",
        "transport",
    )

    def __init__(self, engine: ProxyEngine, served: Served, peer: str) -> None:
        self.engine = engine
        self.served = served
        self.peer = peer
        self.transport: ClientTransport | None = None
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
        self._forwarded = b"X-Forwarded-For: " + peer.encode("ascii", "replace") + engine.proto_line

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: ClientTransport) -> None:
        self.transport = transport
        self.deadline = monotonic() + self.engine.idle_timeout
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
        # Only an upstream still bound to us: one already back in the pool serves others.
        upstream = self._upstream
        if upstream is not None and upstream.sink is self:
            upstream.pause_reading()

    def resume_writing(self) -> None:
        upstream = self._upstream
        if upstream is not None and upstream.sink is self:
            upstream.resume_reading()

    def eof_received(self) -> bool | None:
        if self._req == _TUNNEL and self._upstream is not None:
            transport = self._upstream.transport
            if transport is not None and transport.can_write_eof():
                transport.write_eof()
                return True
        return None

    def data_received(self, data: bytes) -> None:
        req = self._req
        if req <= _HEAD:
            self._on_head_bytes(data)
        elif req == _BODY:
            self._on_body(data)
        elif req == _TUNNEL:
            if self._upstream is not None:
                self._upstream.write(data)
                self.deadline = monotonic() + self.engine.idle_timeout
        else:  # _DONE: a pipelined request waits for the current response
            self._buf += data
            if len(self._buf) > MAX_HEAD:
                self._pause(_P_PIPELINE)

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
        if self._req == _TUNNEL:  # silent both ways for idle_timeout: end both sides cleanly
            upstream, self._upstream = self._upstream, None
            if upstream is not None:
                upstream.close()
            self._close()
        elif self._resp in (_R_NONE, _R_WAIT):
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
        # Empty lines before a request are skipped (a 1-byte slice is a cached object: cheap).
        if buffer[:1] == b"\r" and self._req == _IDLE and buffer[:2] == b"\r\n":
            buffer = buffer.lstrip(b"\r\n")
            if not buffer:
                return
        end = buffer.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD:
            if self._req == _IDLE:  # the head's first bytes: its deadline starts now
                self._req = _HEAD
                self.deadline = monotonic() + self.engine.header_timeout
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
        engine = self.engine
        engine.metrics.requests += 1
        self._request = request
        self._keep_alive = request.keep_alive and not engine.draining
        rest = buffer[end + 4 :] if len(buffer) > end + 4 else b""
        attestation = engine.attestation
        target = request.target
        if (
            attestation is not None
            and target.startswith(ATTESTATION_PATH)  # cheap test first: it is rarely this
            and attestation.matches(target)
        ):
            self._local(request, rest)
            return
        self._resp = _R_WAIT
        head = self._upstream_head(request)
        if request.framing == NONE:
            self._req = _DONE
            self.deadline = monotonic() + engine.upstream_timeout
            self._buf = rest
            self._send_request(head)
            return
        self._req = _BODY
        if request.framing == LENGTH:
            self._body_remaining = request.length
        else:
            self._decoder = ChunkedDecoder()
        self.deadline = monotonic() + engine.body_timeout
        out = [head]
        if rest:
            rest = self._take_body(rest, out)
            if self._closed:
                return
        self._buf = rest
        self._send_request(b"".join(out) if len(out) > 1 else head)

    def _send_request(self, data: bytes) -> None:
        """Hand a request head (and what body there is) to a pooled or new upstream."""
        request = self._request
        assert request is not None
        upstream = self.engine.pool.send(self, request.method, data)
        if upstream is not None:
            self._upstream = upstream
            # Replayable on a fresh connection if a rested one turns out to be dead.
            self._retry = data if _replayable(request) else None
        else:
            self._pending = [data]
            self._pending_size = len(data)
            self.engine.spawn(self._connect())

    def _upstream_head(self, request: RequestHead) -> bytes:
        host = request.host if request.host is not None else self.engine.upstream_host
        extra = b""
        if request.framing == NONE and request.upgrade is None and not request.expect_continue:
            pass  # the usual case: nothing to add
        elif request.framing == LENGTH:
            extra = b"\r\nContent-Length: %d" % request.length
        elif request.framing == CHUNKED:
            extra = b"\r\nTransfer-Encoding: chunked"
        if request.expect_continue:
            extra += b"\r\nExpect: 100-continue"
        if request.upgrade is not None:
            extra += b"\r\nConnection: upgrade\r\nUpgrade: " + request.upgrade
        return b"".join(
            (
                request.method,
                b" ",
                request.target,
                b" HTTP/1.1\r\nHost: ",
                host,
                request.fields,
                b"\r\n",
                self._forwarded,
                b"X-Forwarded-Host: ",
                host,
                extra,
                b"\r\n\r\n",
            )
        )

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
        now = monotonic()
        if self._decoder is None:
            remaining = self._body_remaining
            if len(data) < remaining:
                out.append(data)
                self._body_remaining = remaining - len(data)
                self.deadline = now + self.engine.body_timeout
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
        self.deadline = now + self.engine.body_timeout
        return b""

    def _request_done(self, now: float) -> None:
        self._req = _DONE
        if self._resp == _R_WAIT:
            self.deadline = now + self.engine.upstream_timeout

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
        self._retry = data if upstream.reused and _replayable(request) else None
        upstream.begin(self, request.method, data)

    # -- responses (called by the upstream connection) ----------------------------------------
    def on_response_head(self, response: ResponseHead, body: bytes, done: bool) -> None:
        transport = self.transport
        if self._closed or transport is None:
            return
        self._resp = _R_STREAM
        self._retry = None
        if self._req == _BODY:
            self._keep_alive = False  # answered before the request ended: do not resync
        if response.framing == LENGTH:
            self._rechunk = False
            framing = b"Content-Length: %d\r\n" % response.length
        else:
            framing = self._client_framing(response)
            if self._rechunk:
                body = (chunk(body) if body else b"") + (LAST_CHUNK if done else b"")
        if self._keep_alive:  # an HTTP/1.0 client must be told the line stays open
            request = self._request
            close = _KEEP_ALIVE_LINE if request is not None and request.minor == 0 else b""
        else:
            close = b"Connection: close\r\n"
        answer = b"".join(
            (b"HTTP/1.1", response.status_rest, response.fields, b"\r\n", framing, close,
             b"\r\n", body)
        )  # fmt: skip
        if not done:
            transport.write(answer)
            self.deadline = monotonic() + self.engine.upstream_timeout
            return
        closing = not self._keep_alive or self._req != _DONE or self.engine.draining
        if closing and self._req == _DONE and type(transport) is TLSTransport:
            transport.write_last(answer)  # answer, close_notify and FIN leave together
        else:
            transport.write(answer)
        self._response_done()

    def _client_framing(self, response: ResponseHead) -> bytes:
        """The framing line for a response without a Content-Length (sets ``_rechunk``)."""
        request = self._request
        assert request is not None
        self._rechunk = False
        if response.framing == NONE:
            bodiless = response.status in (204, 304) or request.method == b"HEAD"
            return b"" if bodiless else b"Content-Length: 0\r\n"
        if request.minor == 1:
            self._rechunk = True
            return b"Transfer-Encoding: chunked\r\n"
        self._keep_alive = False  # HTTP/1.0 client: the end of the body is the end of the line
        return b""

    def on_response_body(self, body: bytes, done: bool) -> None:
        transport = self.transport
        if self._closed or transport is None:
            return
        if self._rechunk:
            body = (chunk(body) if body else b"") + (LAST_CHUNK if done else b"")
        if body:
            transport.write(body)
        if done:
            self._response_done()
        else:
            self.deadline = monotonic() + self.engine.upstream_timeout

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
        upgrade = response.upgrade or request.upgrade
        head = b"HTTP/1.1" + response.status_rest + response.fields
        head += b"\r\nConnection: upgrade\r\nUpgrade: " + upgrade
        self.transport.write(head + b"\r\n\r\n" + rest)
        self._req = _TUNNEL
        self._resp = _R_STREAM
        self.deadline = monotonic() + self.engine.idle_timeout  # pushed on by either side's bytes
        if self._buf and self._upstream is not None:
            self._upstream.write(self._buf)
        self._buf = b""

    def on_tunnel_data(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)
            self.deadline = monotonic() + self.engine.idle_timeout

    def on_tunnel_closed(self, clean: bool) -> None:
        """Upstream closed the tunnel: a clean close flushes what it sent and ends the TLS
        connection with close_notify; a broken one resets the client too."""
        self._upstream = None
        if clean:
            self._close()
        else:
            self._abort()

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

    def request_sent(self) -> bool:
        """The whole request went up (so its upstream socket may be reused)."""
        return self._req == _DONE and self._pending is None

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
        self.deadline = monotonic() + self.engine.idle_timeout
        if self._paused:
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
        accept = header_value(request.fields, b"accept")
        response = await attestation.respond(
            request.method, request.target, accept, self.served.identity, self.peer
        )
        self._write_local(response, head_only=request.method == b"HEAD", minor=request.minor)

    def _write_local(
        self, response: LocalResponse, *, head_only: bool = False, minor: int = 1
    ) -> None:
        if self._closed or self.transport is None:
            return
        keep = self._keep_alive and not self.engine.draining
        if keep and minor == 0:  # an HTTP/1.0 client must be told the line stays open
            response = replace(response, headers=(*response.headers, b"Connection: keep-alive"))
        self.transport.write(response.render(keep_alive=keep, head_only=head_only))
        self._resp = _R_NONE
        self._response_done()

    def _send_error(self, status: int) -> None:
        """Answer ``status`` with a fixed body and close: the stream cannot be trusted."""
        self._keep_alive = False
        self._req = _DONE
        self._resp = _R_NONE
        transport = self.transport
        if transport is not None and not self._closed:
            transport.write(error_response(status).render(keep_alive=False))
            if isinstance(transport, TLSTransport):  # the rest of the request may be coming
                transport.linger = True
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
