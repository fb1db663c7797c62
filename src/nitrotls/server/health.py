"""``/healthz``, ``/readyz`` and ``/metrics`` on a separate, local, plain-HTTP port.

Health is for the orchestrator on the same machine, so it has no TLS and should listen on
127.0.0.1 (or a Unix socket). ``/healthz``: the process runs. ``/readyz``: a certificate is
loaded and not expired. ``/metrics``: Prometheus text format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nitrotls.server.errors import ServerConfigError
from nitrotls.server.identity import ContextHolder
from nitrotls.server.listener import ListeningSocket
from nitrotls.server.metrics import Metrics
from nitrotls.transport.address import Address

log = logging.getLogger(__name__)

_MAX_REQUEST = 8192
_TIMEOUT = 5.0
HEALTH_SCHEMES = ("tcp", "unix")  # local only: never vsock, never TLS


class HealthServer:
    """A tiny HTTP/1.1 responder: one request per connection."""

    def __init__(self, address: Address, holder: ContextHolder, metrics: Metrics) -> None:
        self.address = address
        self.holder = holder
        self.metrics = metrics
        self._server: asyncio.Server | None = None
        self._listening: ListeningSocket | None = None

    async def start(self) -> Address:
        """Listen like the TLS listener does (``ListeningSocket``): a Unix socket file is made
        owner-only, a live one is never taken over, and failures are ``ListenError`` (exit 71)."""
        if self.address.scheme not in HEALTH_SCHEMES:
            raise ServerConfigError(f"health address {self.address} must be tcp:// or unix://")
        self._listening = ListeningSocket.open(self.address, backlog=64)
        self._server = await asyncio.start_server(self._handle, sock=self._listening.sock)
        if self.address.scheme == "tcp":
            return self.address.with_port(self._listening.sock.getsockname()[1])
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        if self._listening is not None:
            self._listening.close()  # removes the socket file if it is still ours
            self._listening = None

    def ready(self) -> tuple[bool, str]:
        served = self.holder.current()
        if served is None:
            return False, "no certificate loaded"
        if served.identity.seconds_left() <= 0:
            return False, "the served certificate has expired"
        if not self.metrics.serving:
            return False, "not accepting connections"
        return True, "ready"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = self._route(head[:_MAX_REQUEST])
            writer.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                b"Cache-Control: no-store\r\nConnection: close\r\n\r\n"
                % (status, b"OK" if status == 200 else b"Error", content_type, len(body))
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()

    def _route(self, head: bytes) -> tuple[int, bytes, bytes]:
        parts = head.split(b" ", 2)
        if len(parts) < 3 or parts[0] != b"GET":
            return 405, b"text/plain", b"only GET\n"
        path = parts[1].partition(b"?")[0]
        if path == b"/healthz":
            return 200, b"text/plain", b"ok\n"
        if path == b"/readyz":
            ok, reason = self.ready()
            return (200 if ok else 503), b"text/plain", reason.encode() + b"\n"
        if path == b"/metrics":
            return 200, b"text/plain; version=0.0.4", self.metrics.render().encode()
        return 404, b"text/plain", b"not found\n"
