"""Accepting TLS connections: our own accept loop over one listening socket.

Why not ``loop.create_server``: we must (1) pick the TLS context current *at accept time*, so a
hot reload affects new connections only; (2) read a PROXY v2 header in clear text before the
TLS handshake; (3) stop accepting at the connection limit (connections then wait in the kernel's
backlog instead of being accepted and dropped); (4) spend a ``--one-shot`` context after its
first handshake. Deadlines of all connections are checked by one sweeper task.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nitrotls.server.errors import ListenError
from nitrotls.server.identity import ContextHolder, Served
from nitrotls.server.metrics import Metrics
from nitrotls.transport import proxy_protocol
from nitrotls.transport.address import Address
from nitrotls.transport.errors import ProxyProtocolError
from nitrotls.transport.sockets import socket_path

log = logging.getLogger(__name__)


class Tracked(Protocol):
    """What the listener needs from a connection: a deadline and two ways to end it."""

    deadline: float

    def expire(self) -> None: ...

    def drain(self) -> None: ...


ConnectionFactory = Callable[[Served, str], asyncio.Protocol]


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
        self._empty = asyncio.Event()
        self._empty.set()

    def opened(self, conn: Tracked) -> None:
        """A connection finished its handshake (protocols call this from connection_made)."""
        self.connections.add(conn)
        self.metrics.handshakes += 1
        self.metrics.connections_active = len(self.connections)
        self._empty.clear()
        if self.on_opened is not None:
            self.on_opened()

    def closed(self, conn: Tracked) -> None:
        self.connections.discard(conn)
        self.metrics.connections_active = len(self.connections)
        if not self.connections:
            self._empty.set()
        if self.on_closed is not None:
            self.on_closed()

    def sweep(self, now: float) -> None:
        for conn in [c for c in self.connections if c.deadline < now]:
            conn.expire()

    def drain(self) -> None:
        for conn in list(self.connections):
            conn.drain()

    async def wait_empty(self) -> None:
        await self._empty.wait()


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
        self.sweep_hooks: list[Callable[[float], None]] = [registry.sweep]
        self.one_shot_done = asyncio.Event()
        self._sock: socket.socket | None = None
        self._unix_path: Path | None = None
        self._handshaking = 0
        self._accepting = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        registry.on_closed = self._maybe_resume
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
        self._sock, self._unix_path = bind(self.address, self.settings.backlog)
        self._resume_accept()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        return self.bound

    def stop_accepting(self) -> None:
        """Close the listening socket (and its Unix socket file, if we made one)."""
        self._pause_accept()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self._unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._unix_path.unlink()
            self._unix_path = None

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
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    # -- accepting -----------------------------------------------------------------------------
    def _resume_accept(self) -> None:
        if not self._accepting and self._sock is not None:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._on_readable)
            self._accepting = True

    def _pause_accept(self) -> None:
        if self._accepting and self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._accepting = False

    def _maybe_resume(self) -> None:
        if not self._accepting and self._sock is not None and not self._full():
            self._resume_accept()

    def _full(self) -> bool:
        return len(self.registry.connections) + self._handshaking >= self.settings.max_connections

    def _on_readable(self) -> None:
        sock = self._sock
        loop = asyncio.get_running_loop()
        while sock is not None:
            if self._full():
                self._pause_accept()
                return
            try:
                conn, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log.error("accept failed: %s", error)
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accept()
                    loop.call_later(0.1, self._maybe_resume)
                return
            self._handshaking += 1
            task = loop.create_task(self._handshake(conn, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handshake(self, conn: socket.socket, peer: object) -> None:
        loop = asyncio.get_running_loop()
        try:
            served = self.holder.current()
            if served is None:
                self.metrics.connections_refused += 1
                conn.close()
                return
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                # The response and the TLS close_notify must not wait for a delayed ACK.
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _peer_text(peer)
            if self.settings.proxy_protocol:
                client = await self._read_proxy_header(conn) or client
            protocol = self.factory(served, client)
            await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=served.context,
                ssl_handshake_timeout=self.settings.handshake_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ProxyProtocolError) as error:
            self.metrics.handshake_failures += 1
            log.debug("connection from %s failed before serving: %s", _peer_text(peer), error)
            conn.close()
        finally:
            self._handshaking -= 1
            self._maybe_resume()

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


def bind(address: Address, backlog: int) -> tuple[socket.socket, Path | None]:
    """A non-blocking listening socket for ``address`` (and the Unix socket file we created)."""
    try:
        if address.scheme == "tcp":
            sock = socket.create_server(
                (address.host, address.port),
                family=socket.AF_INET6 if ":" in address.host else socket.AF_INET,
                backlog=backlog,
                reuse_port=False,
            )
            path = None
        else:
            sock, path = _bind_path(address, backlog)
    except OSError as error:
        raise ListenError(f"cannot listen on {address}: {error.strerror or error}") from None
    sock.setblocking(False)
    return sock, path


def _bind_path(address: Address, backlog: int) -> tuple[socket.socket, Path | None]:
    path = socket_path(address)
    if path is None:
        from nitrotls.transport import vsock

        sock = vsock.new_vsock_socket()
        sock.bind((vsock.VMADDR_CID_ANY, address.port))
        sock.listen(backlog)
        return sock, None
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        path.chmod(0o600)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock, path


def _clear_stale(path: Path) -> None:
    """Remove a Unix socket file nobody answers on; refuse a live one or a non-socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ListenError(f"{path} exists and is not a socket; refusing to remove it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise ListenError(f"another process is listening on {path}")
