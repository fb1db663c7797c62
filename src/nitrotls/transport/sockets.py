"""Async listen and connect for every :class:`Address` scheme, as asyncio streams.

Unix listeners are bound here rather than by asyncio, because asyncio removes *any* socket file
in the way, even a live one; we remove a socket file only when nothing answers on it, never a
non-socket, and on close only the file we created.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

from nitrotls.transport import vsock
from nitrotls.transport.address import Address
from nitrotls.transport.errors import AddressError, ListenError, TransportConnectError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
DEFAULT_BACKLOG = 512


def socket_path(address: Address) -> Path | None:
    """The filesystem path behind a Unix address or a development-mapped vsock address."""
    if address.scheme == "unix":
        return Path(address.path)
    if address.scheme == "vsock" and vsock.vsock_mode() == "unix":
        return vsock.dev_socket_path(address.cid, address.port)
    return None


def describe(address: Address) -> str:
    """The address for a log line, naming the development socket file when there is one."""
    if address.scheme == "vsock":
        path = socket_path(address)
        return f"{address} (dev: unix://{path})" if path else f"{address} (AF_VSOCK)"
    return str(address)


class Listener:
    """A running listener: an :class:`asyncio.Server` plus the socket file it owns, if any."""

    def __init__(self, address: Address, server: asyncio.Server, unix: Path | None) -> None:
        self.address = address
        self.server = server
        self._unix = unix
        self._unix_id = _file_id(unix) if unix else None

    def close(self) -> None:
        """Stop accepting and remove our socket file (only if it is still ours)."""
        self.server.close()
        if self._unix is not None and self._unix_id is not None:
            if _file_id(self._unix) == self._unix_id:
                with contextlib.suppress(FileNotFoundError):
                    self._unix.unlink()
            self._unix_id = None

    async def wait_closed(self) -> None:
        await self.server.wait_closed()

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


async def listen(address: Address, handler: Handler, *, backlog: int = DEFAULT_BACKLOG) -> Listener:
    """Listen on ``address``; each connection runs ``handler(reader, writer)`` in a task."""
    if address.scheme == "tcp":
        try:
            server = await asyncio.start_server(
                handler, address.host, address.port, backlog=backlog, reuse_address=True
            )
        except OSError as error:
            raise ListenError(f"cannot listen on {address}: {error.strerror or error}") from None
        port = server.sockets[0].getsockname()[1] if server.sockets else address.port
        return Listener(address.with_port(port), server, None)
    sock = bind_socket(address, backlog=backlog)
    path = socket_path(address)
    try:
        server = await asyncio.start_server(handler, sock=sock, backlog=backlog)
    except BaseException:
        sock.close()
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    return Listener(address, server, path)


def bind_socket(address: Address, *, backlog: int = DEFAULT_BACKLOG) -> socket.socket:
    """A bound, listening, non-blocking socket for ``address``, for servers that take a socket
    (``asyncio.start_server(sock=...)``, uvicorn). A Unix socket file (also a mapped vsock's)
    is the caller's to remove: :func:`socket_path` names it."""
    path = socket_path(address)
    if path is not None:
        return _bind_unix(path, backlog, address)
    if address.scheme == "vsock":
        return _bind_vsock(address, backlog)
    return _bind_tcp(address, backlog)


async def connect(address: Address, *, timeout: float | None = 10.0) -> Streams:
    """Open a stream connection to ``address``; failures are :class:`TransportConnectError`."""
    if address.scheme == "tcp" and address.port == 0:
        raise AddressError(f"cannot connect to {address}: port 0 is only valid for listening")
    try:
        async with asyncio.timeout(timeout):
            return await _open(address)
    except TimeoutError:
        raise TransportConnectError(
            f"timed out after {timeout}s connecting to {describe(address)}"
        ) from None
    except OSError as error:
        raise TransportConnectError(
            f"cannot connect to {describe(address)}: {error.strerror or error}"
        ) from None


async def _open(address: Address) -> Streams:
    path = socket_path(address)
    if path is not None:
        return await _open_unix(path)
    if address.scheme == "vsock":
        sock = vsock.new_vsock_socket()
        try:
            await asyncio.get_running_loop().sock_connect(sock, (address.cid, address.port))
            return await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
    return await asyncio.open_connection(address.host, address.port)


async def _open_unix(path: Path) -> Streams:
    # A non-blocking Unix connect fails with EAGAIN while the listener's backlog is full, and
    # asyncio would mistake that for "in progress" and hand back an unconnected socket. A
    # blocking connect waits for room instead; do the same without blocking the loop.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    delay = 0.001
    try:
        while True:
            try:
                sock.connect(str(path))
                break
            except BlockingIOError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
        return await asyncio.open_unix_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


def _bind_tcp(address: Address, backlog: int) -> socket.socket:
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise ListenError(f"cannot listen on {address}: {error.strerror or error}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise ListenError(f"cannot listen on {address}: {error.strerror or error}") from None
    return sock


def _bind_vsock(address: Address, backlog: int) -> socket.socket:
    # A vsock socket only receives connections addressed to its own CID, so binding the wildcard
    # CID is as narrow as binding our own; the CID in a listen address is what peers dial.
    sock = vsock.new_vsock_socket()
    try:
        sock.bind((vsock.VMADDR_CID_ANY, address.port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise ListenError(f"cannot listen on {address}: {error.strerror or error}") from None
    return sock


def _bind_unix(path: Path, backlog: int, address: Address) -> socket.socket:
    _clear_stale(path, address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise ListenError(
            f"cannot listen on {describe(address)}: {error.strerror or error}"
        ) from None
    return sock


def _clear_stale(path: Path, address: Address) -> None:
    """Remove a socket file nobody listens on; refuse a live one or a non-socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ListenError(
            f"cannot listen on {describe(address)}: {path} exists and is not a socket; "
            "refusing to remove it"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)
        return
    except OSError as error:
        if error.errno != errno.EAGAIN:
            raise ListenError(f"cannot probe {path}: {error.strerror or error}") from None
    finally:
        probe.close()
    raise ListenError(f"cannot listen on {describe(address)}: another process is listening there")


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino)
