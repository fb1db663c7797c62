"""Accepting TLS connections: our own accept loop over one listening socket.

Why not ``loop.create_server``: we must (1) pick the TLS context current *at accept time*, so a
hot reload affects new connections only; (2) read a PROXY v2 header in clear text before the
TLS handshake; (3) stop accepting at the connection limit (connections then wait in the kernel's
backlog instead of being accepted and dropped); (4) spend a ``--one-shot`` context after its
first handshake. Deadlines of all connections are checked by one sweeper task.

Each accepted connection becomes a :class:`~nitrotls.server.tlsconn.TLSTransport` (OpenSSL on
the socket itself): no coroutine, task or timer per connection; the protocol is built when the
handshake is done. Only the PROXY v2 path, which reads a clear-text header first, runs a task
per connection.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nitrotls.server.accepted import Accepted
from nitrotls.server.errors import ListenError
from nitrotls.server.identity import ContextHolder, Served
from nitrotls.server.metrics import Metrics
from nitrotls.server.tlsconn import ConnectionProtocol, Poller, TLSTransport
from nitrotls.transport import proxy_protocol
from nitrotls.transport.address import Address
from nitrotls.transport.errors import ListenError as TransportListenError
from nitrotls.transport.errors import ProxyProtocolError
from nitrotls.transport.sockets import bind_socket, socket_path

log = logging.getLogger(__name__)


class Tracked(Protocol):
    """What the listener needs from a connection: a deadline and two ways to end it."""

    deadline: float

    def expire(self) -> None: ...

    def drain(self) -> None: ...


ConnectionFactory = Callable[[Served, str], ConnectionProtocol]


@dataclass(frozen=True)
class ListenSettings:
    """Limits of one listener."""

    max_connections: int = 4096
    handshake_timeout: float = 10.0
    proxy_protocol: bool = False
    proxy_header_timeout: float = 5.0
    backlog: int = 1024
    tick: float = 0.5  # how often deadlines are checked


class ConnectionRegistry:
    """The open connections of a listener, for deadlines, limits and graceful shutdown."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.connections: set[Tracked] = set()
        self.on_closed: Callable[[], None] | None = None
        self.on_opened: Callable[[], None] | None = None
        self._emptied: asyncio.Future[None] | None = None  # made only when someone waits

    def opened(self, conn: Tracked) -> None:
        """A connection finished its handshake (protocols call this from connection_made)."""
        connections = self.connections
        connections.add(conn)
        metrics = self.metrics
        metrics.handshakes += 1
        metrics.connections_active = len(connections)
        if self.on_opened is not None:
            self.on_opened()

    def closed(self, conn: Tracked) -> None:
        connections = self.connections
        connections.discard(conn)
        self.metrics.connections_active = len(connections)
        if not connections and self._emptied is not None:
            if not self._emptied.done():
                self._emptied.set_result(None)
            self._emptied = None
        if self.on_closed is not None:
            self.on_closed()

    def sweep(self, now: float) -> None:
        for conn in [c for c in self.connections if c.deadline < now]:
            conn.expire()

    def drain(self) -> None:
        for conn in list(self.connections):
            conn.drain()

    async def wait_empty(self) -> None:
        while self.connections:
            if self._emptied is None:
                self._emptied = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._emptied)


class TLSListener:
    """One listening socket serving TLS with whatever ``holder`` holds at accept time."""

    def __init__(
        self,
        address: Address,
        holder: ContextHolder,
        factory: ConnectionFactory,
        registry: ConnectionRegistry,
        metrics: Metrics,
        settings: ListenSettings | None = None,
    ) -> None:
        self.address = address
        self.holder = holder
        self.factory = factory
        self.registry = registry
        self.metrics = metrics
        self.settings = settings or ListenSettings()
        self.sweep_hooks: list[Callable[[float], None]] = [registry.sweep, self._sweep_unopened]
        self.one_shot_done = asyncio.Event()
        self._listening: ListeningSocket | None = None
        self._sock: socket.socket | None = None
        self._handshaking = 0
        self._accepting = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: Poller | None = None
        self._sweeper: asyncio.Task[None] | None = None
        if holder.one_shot:
            registry.on_opened = self._spend_one_shot

    @property
    def bound(self) -> Address:
        """The address actually bound (a TCP port 0 replaced by the kernel's choice)."""
        if self._sock is not None and self.address.scheme == "tcp":
            return self.address.with_port(self._sock.getsockname()[1])
        return self.address

    def start(self) -> Address:
        """Bind, listen and begin accepting; returns :attr:`bound`."""
        self._listening = ListeningSocket.open(self.address, self.settings.backlog)
        self._poller = Poller(asyncio.get_running_loop())
        self._sock = self._listening.sock
        self._resume_accept()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        return self.bound

    def stop_accepting(self) -> None:
        """Close the listening socket (and its Unix socket file, if we made one)."""
        self._pause_accept()
        self._sock = None
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.close()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let open exchanges finish for up to ``grace`` seconds, then cut."""
        self.stop_accepting()
        self.registry.drain()
        try:
            async with asyncio.timeout(grace):
                await self.registry.wait_empty()
        except TimeoutError:
            log.warning(
                "%d connections still open after %.1fs; closing them",
                len(self.registry.connections),
                grace,
            )
            for conn in list(self.registry.connections):
                transport = getattr(conn, "transport", None)
                if transport is not None:
                    transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._poller is not None:
            self._poller.abort_unopened()
            self._poller.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    # -- accepting -----------------------------------------------------------------------------
    def _resume_accept(self) -> None:
        if not self._accepting and self._sock is not None:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._on_readable)
            self._accepting = True
            self.registry.on_closed = None  # nothing to resume: no call per closed connection

    def _pause_accept(self) -> None:
        if self._accepting and self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._accepting = False
        self.registry.on_closed = self._maybe_resume  # a closed connection may make room

    def _maybe_resume(self) -> None:
        if not self._accepting and self._sock is not None and not self._full():
            self._resume_accept()

    def _full(self) -> bool:
        return len(self.registry.connections) + self._handshaking >= self.settings.max_connections

    def _on_readable(self) -> None:
        listening = self._listening
        while listening is not None and self._accepting:
            if len(self.registry.connections) + self._handshaking >= self.settings.max_connections:
                self._pause_accept()
                return
            try:
                conn, peer = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log.error("accept failed: %s", error)
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accept()
                    asyncio.get_running_loop().call_later(0.1, self._maybe_resume)
                return
            self._handshaking += 1
            if self.settings.proxy_protocol:
                wrapped = listening.wrap(conn)  # the loop's sock_recv wants a socket.socket
                task = asyncio.get_running_loop().create_task(self._proxied(wrapped, peer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                client = peer[0] if type(peer) is tuple and type(peer[0]) is str else "local"
                self._start_tls(conn, client)
            listening = self._listening

    def _start_tls(self, conn: _socket.socket, client: str) -> None:
        """Start a TLS handshake on ``conn`` with the context current right now."""
        served = self.holder.current()
        if served is None:
            self.metrics.connections_refused += 1
            conn.close()
            self._handshake_over()
            return
        poller, listening = self._poller, self._listening
        assert poller is not None
        nodelay = listening is not None and listening.has_nodelay(conn)
        try:
            TLSTransport(
                poller, conn, served.context, self, self.settings.handshake_timeout,
                (served, client), nodelay,  # positional: no keyword dict per call
            )  # fmt: skip
        except (OSError, ssl.SSLError) as error:
            self._handshake_failed(conn, error)
            self._handshake_over()

    # -- HandshakeOwner (called by the transports) ---------------------------------------------
    def handshake_done(self, transport: TLSTransport) -> ConnectionProtocol | None:
        self._handshaking -= 1
        if not self._accepting:
            self._maybe_resume()
        served, client = transport.tag
        return self.factory(served, client)

    def handshake_failed(self, transport: TLSTransport, error: BaseException) -> None:
        self._handshake_failed(None, error)
        self._handshake_over()

    def _handshake_failed(self, conn: _socket.socket | None, error: BaseException) -> None:
        self.metrics.handshake_failures += 1
        if not isinstance(error, (OSError, ssl.SSLError, TimeoutError, ProxyProtocolError)):
            log.error("connection setup failed: %r", error)
        else:
            log.debug("connection failed before serving: %s", error)
        if conn is not None:
            conn.close()

    def _handshake_over(self) -> None:
        self._handshaking -= 1
        self._maybe_resume()

    async def _proxied(self, conn: socket.socket, peer: object) -> None:
        """The PROXY v2 path: read the clear-text header, then hand over to TLS."""
        try:
            conn.setblocking(False)
            client = await self._read_proxy_header(conn) or _peer_text(peer)
        except (OSError, TimeoutError, ProxyProtocolError) as error:
            self._handshake_failed(conn, error)
            self._handshake_over()
            return
        except asyncio.CancelledError:
            conn.close()
            self._handshake_over()
            raise
        self._start_tls(conn, client)

    def _spend_one_shot(self) -> None:
        if self.one_shot_done.is_set():
            return
        log.info("one-shot: first handshake done; dropping the TLS context and its key")
        self.holder.spend()
        self.stop_accepting()
        self.one_shot_done.set()

    async def _read_proxy_header(self, conn: socket.socket) -> str | None:
        try:
            async with asyncio.timeout(self.settings.proxy_header_timeout):
                prefix = await _recv_exactly(conn, proxy_protocol.PREFIX_LENGTH)
                total = proxy_protocol.header_length(prefix)
                rest = await _recv_exactly(conn, total - proxy_protocol.PREFIX_LENGTH)
        except TimeoutError:
            raise ProxyProtocolError("no PROXY v2 header in time") from None
        header = proxy_protocol.decode(prefix + rest)
        if header.command == "PROXY" and header.source is not None:
            return header.source[0]
        return None

    def _sweep_unopened(self, now: float) -> None:
        if self._poller is not None:
            self._poller.sweep(now)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick)
            now = time.monotonic()
            for hook in self.sweep_hooks:
                try:
                    hook(now)
                except Exception:  # a bug in one hook must not stop every timeout
                    log.exception("sweep hook failed")


async def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        piece = await loop.sock_recv(conn, size - len(data))
        if not piece:
            raise ProxyProtocolError(
                f"connection closed inside the PROXY v2 header after {len(data)} bytes"
            )
        data += piece
    return data


def _peer_text(peer: object) -> str:
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return peer[0]
    return "local"


class ListeningSocket:
    """A bound, listening, non-blocking socket from ``nitrotls.transport`` (which removes a
    stale Unix socket file but never a live one or a non-socket), and the socket file it made.

    Unix socket files are made owner-only: the only client meant to reach them is the local
    inbound proxy. On close the file is removed only if it is still the one bound here.
    """

    def __init__(self, sock: socket.socket, path: Path | None) -> None:
        self.sock = sock
        self.path = path
        self._file_id = _file_id(path) if path is not None else None
        self._family, self._type, self._proto = int(sock.family), int(sock.type), sock.proto
        self._accept = sock._accept  # type: ignore[attr-defined]  # what accept() calls
        # TCP_NODELAY is set on a TCP listener; where accepted sockets inherit it (Linux), the
        # per-connection setsockopt is skipped. None: not known until the first connection.
        self.nodelay_inherited: bool | None = None
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                self.nodelay_inherited = False
        else:
            self.nodelay_inherited = False

    @classmethod
    def open(cls, address: Address, backlog: int) -> ListeningSocket:
        try:
            sock = bind_socket(address, backlog=backlog)
        except TransportListenError as error:
            raise ListenError(str(error)) from None
        path = socket_path(address)
        if path is not None:
            try:
                path.chmod(0o600)
            except OSError as error:
                sock.close()
                path.unlink(missing_ok=True)
                raise ListenError(f"cannot restrict {path} to its owner: {error}") from None
        return cls(sock, path)

    def accept(self) -> tuple[Accepted, Any]:
        """``socket.accept()``, but the connection is an :class:`Accepted` socket.

        ``socket.socket`` adds a Python ``__init__`` (and enum-building ``family``/``type``
        properties) to every connection; the TLS transport needs none of it (about 0.4 µs per
        connection in a timing loop). :meth:`wrap` makes a ``socket.socket`` for code that
        wants one.
        """
        fd, peer = self._accept()
        return Accepted(self._family, self._type, self._proto, fd), peer

    def wrap(self, conn: _socket.socket) -> socket.socket:
        """``conn`` as a ``socket.socket`` (what the event loop's socket methods accept)."""
        return socket.socket(self._family, self._type, self._proto, conn.detach())

    def has_nodelay(self, conn: _socket.socket) -> bool:
        """Whether ``conn`` has TCP_NODELAY already: known after the first TCP connection."""
        inherited = self.nodelay_inherited
        return inherited if inherited is not None else self.check_nodelay(conn)

    def check_nodelay(self, conn: _socket.socket) -> bool:
        """Whether ``conn`` has TCP_NODELAY from this listener; the answer, found on the first
        TCP connection, holds for every later one (the kernel copies the listener's option)."""
        try:
            inherited = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        except OSError:
            return False
        self.nodelay_inherited = inherited
        return inherited

    def close(self) -> None:
        self.sock.close()
        if self.path is not None and self._file_id is not None:
            if _file_id(self.path) == self._file_id:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self._file_id = None


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino)
