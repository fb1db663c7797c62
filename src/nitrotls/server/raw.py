"""``--upstream tcp://HOST:PORT``: raw bytes after TLS, and attestation selected by ALPN.

A raw listener cannot answer an HTTP path, because the bytes after the handshake belong to the
application (a database, gRPC over h2c, anything). The attestation endpoint is therefore chosen
during the handshake: a client that offers the ALPN value ``nitrotls-attest/1`` (and the server
selects it) gets an HTTP/1.1 connection that serves only ``GET /.well-known/nitrotls/
attestation``; every other connection is relayed byte for byte to one new upstream connection.
The same certificate and key serve both, so a client that attests on one connection and then
opens another verifies the SPKI it is shown on the second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from nitrotls.server.attest import AttestationResponder, error_response
from nitrotls.server.http1 import MAX_HEAD, NONE, ProtocolError, header_value, parse_request
from nitrotls.server.identity import Served
from nitrotls.server.listener import ConnectionRegistry
from nitrotls.server.metrics import Metrics
from nitrotls.server.proxy import ProxySettings

log = logging.getLogger(__name__)

INF = float("inf")
ATTEST_ALPN = "nitrotls-attest/1"
_MAX_PENDING = 256 * 1024


@dataclass
class RawEngine:
    """Shared state of a raw listener."""

    host: str
    port: int
    registry: ConnectionRegistry
    attestation: AttestationResponder | None
    settings: ProxySettings
    metrics: Metrics
    connect_timeout: float = 5.0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def factory(self, served: Served, peer: str) -> asyncio.Protocol:
        return RawConnection(self, served, peer)

    def spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class _UpstreamSide(asyncio.Protocol):
    def __init__(self, owner: RawConnection) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.owner.from_upstream(data)

    def eof_received(self) -> bool | None:
        self.owner.upstream_closed()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.upstream_closed()

    def pause_writing(self) -> None:
        self.owner.pause_client()

    def resume_writing(self) -> None:
        self.owner.resume_client()


class RawConnection(asyncio.Protocol):
    """One client: a byte relay to upstream, or (by ALPN) the attestation endpoint."""

    def __init__(self, engine: RawEngine, served: Served, peer: str) -> None:
        self.engine = engine
        self.served = served
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.deadline = INF
        self._up: _UpstreamSide | None = None
        self._pending: list[bytes] | None = []
        self._pending_size = 0
        self._attest: AttestOnly | None = None
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.engine.registry.opened(self)
        sslobj = transport.get_extra_info("ssl_object")
        alpn = sslobj.selected_alpn_protocol() if sslobj is not None else None
        if alpn == ATTEST_ALPN:
            self._attest = AttestOnly(self, self.engine, self.served, self.peer)
            self.deadline = time.monotonic() + self.engine.settings.idle_timeout
            return
        self.engine.spawn(self._connect())

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._pending = None
        if self._up is not None and self._up.transport is not None:
            self._up.transport.close()
        self.engine.registry.closed(self)

    def data_received(self, data: bytes) -> None:
        if self._attest is not None:
            self._attest.feed(data)
        elif self._up is not None and self._up.transport is not None:
            self._up.transport.write(data)
        elif self._pending is not None:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > _MAX_PENDING and self.transport is not None:
                self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        up = self._up.transport if self._up is not None else None
        if up is not None and up.can_write_eof():
            up.write_eof()
            return True
        return None

    def pause_writing(self) -> None:
        if self._up is not None and self._up.transport is not None:
            self._up.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._up is not None and self._up.transport is not None:
            self._up.transport.resume_reading()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.engine.connect_timeout):
                _, up = await loop.create_connection(
                    lambda: _UpstreamSide(self), self.engine.host, self.engine.port
                )
        except (OSError, TimeoutError) as error:
            log.warning(
                "raw upstream %s:%s unreachable: %s", self.engine.host, self.engine.port, error
            )
            self.engine.metrics.upstream_errors += 1
            self.close()
            return
        if self._closed or self._pending is None:
            if up.transport is not None:
                up.transport.close()
            return
        self._up = up
        pending, self._pending = self._pending, None
        if pending and up.transport is not None:
            up.transport.write(b"".join(pending))
        if self._pending_size > _MAX_PENDING and self.transport is not None:
            self.transport.resume_reading()

    def from_upstream(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    def upstream_closed(self) -> None:
        self.close()

    def pause_client(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_client(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self._closed:
            self._closed = True
            self.transport.close()

    def expire(self) -> None:
        self.deadline = INF
        self.close()

    def drain(self) -> None:
        if self._attest is not None and not self._attest.busy:
            self.close()
        # A raw relay has no message boundary: it runs until one side closes or grace ends.


class AttestOnly:
    """HTTP/1.1 on an ``nitrotls-attest/1`` connection: the attestation path and nothing else."""

    def __init__(self, conn: RawConnection, engine: RawEngine, served: Served, peer: str) -> None:
        self.conn = conn
        self.engine = engine
        self.served = served
        self.peer = peer
        self.busy = False
        self._buf = b""

    def feed(self, data: bytes) -> None:
        self._buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD:
            if len(self._buf) > MAX_HEAD:
                self._finish(error_response(431).render(keep_alive=False), keep=False)
            return
        head, self._buf = self._buf[:end], self._buf[end + 4 :]
        try:
            request = parse_request(head)
        except ProtocolError as error:
            self._finish(error_response(error.status).render(keep_alive=False), keep=False)
            return
        attestation = self.engine.attestation
        if (
            request.framing != NONE
            or attestation is None
            or not attestation.matches(request.target)
        ):
            self._finish(error_response(404).render(keep_alive=False), keep=False)
            return
        self.busy = True
        self.conn.deadline = INF
        self.engine.spawn(
            self._answer(
                attestation,
                request.method,
                request.target,
                header_value(request.fields, b"accept"),
                request.keep_alive,
            )
        )

    async def _answer(
        self,
        attestation: AttestationResponder,
        method: bytes,
        target: bytes,
        accept: bytes | None,
        keep: bool,
    ) -> None:
        response = await attestation.respond(
            method, target, accept, self.served.identity, self.peer
        )
        self._finish(response.render(keep_alive=keep, head_only=method == b"HEAD"), keep=keep)

    def _finish(self, data: bytes, *, keep: bool) -> None:
        self.busy = False
        transport = self.conn.transport
        if transport is None or self.conn._closed:
            return
        transport.write(data)
        if not keep:
            self.conn.close()
            return
        self.conn.deadline = time.monotonic() + self.engine.settings.idle_timeout
        if self._buf:
            self._next()
