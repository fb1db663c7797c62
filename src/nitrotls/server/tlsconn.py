"""A TLS transport in which OpenSSL reads and writes the socket itself.

Why not the event loop's TLS layer: it runs OpenSSL over memory BIOs, so every byte is read by
the loop, copied into a BIO, decrypted, and the reverse on the way out; each connection also
costs a handshake coroutine and its futures, a handshake timer, a shutdown timer that waits for
the peer's ``close_notify``, and an ``SSLWantReadError`` per read event. Here the socket is
handed to ``_ssl`` directly (a socket BIO, non-blocking): the handshake flight, records and
``close_notify`` go from OpenSSL to the kernel without Python copies, and one readiness callback
drives the handshake and then the reads. Readiness comes from one ``epoll`` set of our own
(:class:`Poller`), itself watched by the loop: registering a connection is one ``epoll_ctl`` and
closing its socket removes it, where the loop's ``add_reader``/``remove_reader`` cost several
system calls and objects per connection. See docs/server.md for what each step saved.

What stays the same for the protocol: the ``asyncio.Transport`` interface (``write`` with write
buffering and ``pause_writing``/``resume_writing`` flow control, ``close`` after the buffer is
flushed, ``abort``, ``pause_reading``/``resume_reading``, ``get_extra_info("ssl_object")``),
``connection_made`` after a completed handshake, ``connection_lost`` exactly once, from the loop.

Security properties kept: the TLS policy is the context's (built by ``nitrotls.server.tls``);
the context is chosen by the caller at accept time; OpenSSL sends its own alerts when a
handshake fails; ``close`` sends ``close_notify``. Deadlines (handshake, a close waiting for its
buffer to drain, lingering close) are plain numbers checked by the listener's sweeper, not timers.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import logging
import select
import socket
import ssl
import struct
from collections.abc import Callable
from ctypes import c_void_p
from time import monotonic
from typing import Any, Final, Protocol

from nitrotls.server.tls import SSLAccess, ssl_access

log = logging.getLogger(__name__)

INF: Final = float("inf")
READ_SIZE: Final = 16384  # one TLS record's plaintext at most: one read empties one record
LINGER_TIMEOUT = 2.0  # how long a connection closed mid-request discards late input
# How long a closing connection may wait for a peer that reads none of what is still buffered.
# Its protocol has let go (the proxy keeps no deadline of its own once it closes), so without
# this a client that asks for a large answer and stops reading holds its slot forever. Each
# flush restarts it (see ``close``): a healthy reader drains in milliseconds, 10 s with no
# progress at all outlasts several TCP retransmission backoffs on a lossy link, and it is short
# enough that idle readers cannot pile up against ``max_connections``.
CLOSE_TIMEOUT = 10.0
HIGH_WATER: Final = 64 * 1024
LOW_WATER: Final = 16 * 1024
_BATCH: Final = 64  # readiness events taken from the kernel per loop callback

_WantRead: Final = ssl.SSLWantReadError
_WantWrite: Final = ssl.SSLWantWriteError
_ZeroReturn: Final = ssl.SSLZeroReturnError
_Fatal: Final = (ssl.SSLError, OSError)
_TCP: Final = (socket.AF_INET, socket.AF_INET6)
_IPPROTO_TCP: Final = socket.IPPROTO_TCP
_TCP_NODELAY: Final = socket.TCP_NODELAY
_TCP_CORK: Final[int] = getattr(socket, "TCP_CORK", 3)  # Linux
_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT
_SOL_SOCKET: Final = socket.SOL_SOCKET
_SO_LINGER: Final = socket.SO_LINGER
_LINGER_RESET: Final = struct.pack("ii", 1, 0)  # struct linger {on, 0 s}: close() sends RST
# What socket.socket.close ends in (we never makefile()).
_close_socket: Final = _socket.socket.close

# States.
_HANDSHAKE: Final = 0
_OPEN: Final = 1
_LINGER: Final = 2
_CLOSED: Final = 3


class Poller:
    """An ``epoll`` set for the TLS connections of one listener, watched by the event loop as
    one file descriptor. Level-triggered, like the loop's own readiness callbacks."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._epoll = select.epoll()
        self.handlers: dict[int, TLSTransport] = {}
        # Contexts read ahead when this is known (see nitrotls.server.tls): OpenSSL may then
        # hold input the kernel no longer reports, and only SSL_has_pending tells.
        self.access: SSLAccess | None = ssl_access()
        loop.add_reader(self._epoll.fileno(), self._dispatch)

    def _dispatch(self) -> None:
        handlers = self.handlers
        for fd, events in self._epoll.poll(0, _BATCH):
            transport = handlers.get(fd)
            if transport is None:
                continue
            if events == _IN:  # the usual events: input, or the next handshake flight
                state = transport._state
                if state == _OPEN:
                    transport._read()
                    continue
                if state == _HANDSHAKE:
                    transport._handshake()
                    continue
            transport._on_event(events)

    def register(self, fd: int, mask: int) -> None:
        self._epoll.register(fd, mask)

    def set_interest(self, fd: int, old: int, new: int) -> None:
        """Change what ``fd`` waits for (0: nothing, unregistered)."""
        if new == 0:
            self._epoll.unregister(fd)
        elif old == 0:
            self._epoll.register(fd, new)
        else:
            self._epoll.modify(fd, new)

    def sweep(self, now: float) -> None:
        """Expire handshakes, stalled closes and lingering closes past their deadline (open
        connections not closing have none here: their protocols keep theirs)."""
        for transport in [t for t in self.handlers.values() if t.deadline < now]:
            transport.expire()

    def abort_unopened(self) -> None:
        """Cut every connection still in its handshake or lingering close (at shutdown)."""
        for transport in [t for t in self.handlers.values() if t._state != _OPEN]:
            transport.abort()

    def close(self) -> None:
        if not self._epoll.closed:
            self.loop.remove_reader(self._epoll.fileno())
            self._epoll.close()


class ConnectionProtocol(Protocol):
    """What a :class:`TLSTransport` drives: the ``asyncio.Protocol`` methods it calls. Structural,
    so the compiled protocols need no asyncio base class (which would keep them Python classes,
    with a dictionary lookup for every attribute)."""

    def connection_made(self, transport: Any) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class HandshakeOwner(Protocol):
    """Who accepted the connection: builds the protocol once the handshake is done, and hears
    of failures (deadlines are kept by :meth:`Poller.sweep`)."""

    def handshake_done(self, transport: TLSTransport) -> ConnectionProtocol | None:
        """The protocol for ``transport`` (``None``: close it); ``transport.tag`` is what the
        owner gave the transport."""

    def handshake_failed(self, transport: TLSTransport, error: BaseException) -> None: ...


class TLSTransport:
    """One server-side TLS connection over a non-blocking socket (see the module docstring).

    It has ``asyncio.Transport``'s methods without deriving from it: a compiled (mypyc) class
    with a Python base keeps a Python object layout, and this is the hottest object there is."""

    __slots__ = (
        "_closing",
        "_fd",
        "_has_pending",
        "_mask",
        "_owner",
        "_paused_writing",
        "_pointer",
        "_poller",
        "_protocol",
        "_read_wants_write",
        "_reading",
        "_sock",
        "_state",
        "_tcp",
        "_tls",
        "_wbuf",
        "deadline",
        "linger",
        "tag",
    )

    def __init__(
        self,
        poller: Poller,
        sock: _socket.socket,
        context: ssl.SSLContext,
        owner: HandshakeOwner,
        handshake_timeout: float,
        tag: Any = None,
        nodelay: bool = False,  # the socket has TCP_NODELAY already (from its listener)
    ) -> None:
        self._poller = poller
        self.tag = tag
        self._owner = owner
        self._protocol: ConnectionProtocol | None = None
        self._state = _HANDSHAKE
        self._closing = False
        self._reading = True
        self._read_wants_write = False
        self._paused_writing = False
        self._wbuf: bytes | bytearray = b""  # a bytearray once something waits to be sent
        self.linger = False  # set by a protocol that closes with the request unread
        self.deadline = monotonic() + handshake_timeout
        sock.setblocking(False)
        self._tcp = sock.family in _TCP
        if self._tcp and not nodelay:  # answers must not wait for a delayed ACK
            sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        self._pointer = 0  # the SSL*, for the calls ``_ssl`` does not offer
        access = poller.access
        if access is not None:  # hence ``_ssl``'s own socket objects
            tls = self._tls = context._wrap_socket(sock, True)  # type: ignore[attr-defined]
            self._sock = sock
            self._pointer = c_void_p.from_address(id(tls) + access.offset).value or 0
            self._has_pending = access.has_pending
        else:
            self._tls, self._sock = _wrap(context, sock)
        fd = self._fd = self._sock.fileno()
        poller.register(fd, _IN)
        self._mask = _IN
        poller.handlers[fd] = self

    # -- events ------------------------------------------------------------------------------
    def _on_event(self, events: int) -> None:
        state = self._state
        if state == _OPEN:
            if events & _OUT:
                self._on_writable()
                if self._state != _OPEN or not self._mask & _IN:
                    return
            self._read()
        elif state == _HANDSHAKE:
            self._handshake()
        elif state == _LINGER:
            self._discard()

    def _interest(self, mask: int) -> None:
        if mask != self._mask:
            self._poller.set_interest(self._fd, self._mask, mask)
            self._mask = mask

    def _open_interest(self) -> None:
        """What an open connection waits for: input unless paused, output while buffered."""
        mask = _IN if self._reading and not self._closing else 0
        if self._wbuf or self._read_wants_write:
            mask |= _OUT
        self._interest(mask)

    def _handshake(self) -> None:
        try:
            self._tls.do_handshake()
        except _WantRead:
            if self._mask != _IN:
                self._interest(_IN)
            return
        except _WantWrite:
            self._interest(_OUT)
            return
        except Exception as error:  # TLS, socket, or a context callback: never half-open
            self._teardown()
            self._owner.handshake_failed(self, error)
            return
        self._state = _OPEN
        self.deadline = INF
        if self._mask != _IN:
            self._interest(_IN)
        protocol = self._owner.handshake_done(self)
        if protocol is None:
            self._close_now()
            return
        self._protocol = protocol
        try:
            protocol.connection_made(self)
        except Exception as error:
            self._protocol_failed(error)
            return
        pointer = self._pointer
        if (
            self._state == _OPEN
            and self._reading
            and (self._has_pending(pointer) if pointer else self._buffered())
        ):
            self._read()  # the request came with the client's Finished: no event will say so

    def _buffered(self) -> bool:
        """Whether OpenSSL may hold input that the kernel no longer reports."""
        pointer, access = self._pointer, self._poller.access
        if pointer and access is not None:
            return bool(access.has_pending(pointer))
        if access is None:  # no read-ahead: only a record larger than one read stays behind
            return bool(self._tls.pending())
        return True  # read-ahead but no way to ask: read until OpenSSL wants more

    def _read(self) -> None:
        tls = self._tls
        try:
            data = tls.read(READ_SIZE)
        except _WantRead:
            return
        except _WantWrite:  # a TLS 1.3 KeyUpdate answer met a full socket: retry on writable
            self._read_wants_write = True
            self._open_interest()
            return
        except _ZeroReturn:  # the peer's close_notify
            self._eof()
            return
        except _Fatal as error:
            self._fail(error)
            return
        if not data:
            self._eof()
            return
        pointer = self._pointer
        if self._has_pending(pointer) if pointer else self._buffered():  # more than one record
            data, problem = self._read_more(data)
            if problem is not None:
                self._deliver(data)
                if isinstance(problem, _ZeroReturn):
                    self._eof()
                elif self._state == _OPEN:
                    self._fail(problem)
                return
        protocol = self._protocol
        if protocol is not None and not self._closing:
            try:
                protocol.data_received(data)
            except Exception as error:  # a protocol bug ends its connection, not the loop's work
                self._protocol_failed(error)

    def _protocol_failed(self, error: Exception) -> None:
        log.exception("protocol failed; closing its connection", exc_info=error)
        self.abort()

    def _read_more(self, data: bytes) -> tuple[bytes, Exception | None]:
        tls = self._tls
        while self._buffered():
            try:
                data += tls.read(READ_SIZE)
            except _WantRead:
                break
            except _WantWrite:
                self._read_wants_write = True
                self._open_interest()
                break
            except _Fatal as error:
                return data, error
        return data, None

    def _deliver(self, data: bytes) -> None:
        protocol = self._protocol
        if data and protocol is not None and not self._closing:
            try:
                protocol.data_received(data)
            except Exception as error:
                self._protocol_failed(error)

    def _eof(self) -> None:
        if self._closing:
            self._close_now()
            return
        self._reading = False
        self._open_interest()
        protocol = self._protocol
        keep_open = protocol.eof_received() if protocol is not None else None
        if not keep_open:
            self.close()

    def _on_writable(self) -> None:
        if self._read_wants_write:
            self._read_wants_write = False
            self._open_interest()
            self._read()
            if self._state != _OPEN:
                return
        if self._wbuf:
            self._flush()

    def _flush(self) -> None:
        buffer = self._wbuf
        try:
            sent = self._tls.write(buffer)
        except (_WantWrite, _WantRead):
            sent = 0
        except _Fatal as error:
            self._fail(error)
            return
        del buffer[:sent]  # type: ignore[union-attr]  # a bytearray while not empty
        if self._paused_writing and len(buffer) <= LOW_WATER:
            self._paused_writing = False
            if self._protocol is not None:
                self._protocol.resume_writing()
        if self._state != _OPEN:
            return
        if not buffer and self._closing:
            self._shutdown()
            return
        if self._closing:  # the socket took more: the peer is reading, give it more time
            self.deadline = monotonic() + CLOSE_TIMEOUT
        self._open_interest()

    # -- asyncio.Transport -----------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != _OPEN or self._closing:
            return
        buffer = self._wbuf
        if buffer:
            buffer += data  # a bytearray: grows in place
        else:
            try:
                sent = self._tls.write(data)
            except (_WantWrite, _WantRead):
                sent = 0
            except _Fatal as error:
                self._fail(error)
                return
            if sent == len(data):
                return
            buffer = self._wbuf = bytearray(memoryview(data)[sent:])
            self._open_interest()
        if not self._paused_writing and len(buffer) > HIGH_WATER:
            self._paused_writing = True
            if self._protocol is not None:
                self._protocol.pause_writing()

    def write_last(self, data: bytes) -> None:
        """``write(data)`` then ``close()``, with the socket corked in between (TCP): the last
        answer, ``close_notify`` and the FIN leave in one segment instead of three."""
        if self._state != _OPEN or self._closing:
            return
        if self._tcp and not self._wbuf:
            try:  # noqa: SIM105 (a context manager per connection costs more than this)
                self._sock.setsockopt(_IPPROTO_TCP, _TCP_CORK, 1)  # closing the socket flushes
            except OSError:
                pass
        self.write(data)
        if self._wbuf or self._state != _OPEN:
            self.close()
            return
        self._closing = True  # close() with what it checks known: open, nothing buffered
        self._shutdown()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot half-close")

    def close(self) -> None:
        """Flush what is buffered, send ``close_notify``, close. With data still buffered the
        wait has a deadline, ``CLOSE_TIMEOUT`` from now and pushed forward by every flush: a
        flush runs only when the socket became writable again, i.e. the peer acknowledged (took
        in) more of the answer. A peer that stops reading is aborted by :meth:`expire`; one that
        keeps reading, however slowly, keeps its connection until the buffer is drained. (Not
        the count ``write`` returns: without partial writes OpenSSL reports 0 until the whole
        buffer is out, though it sends records all along.)"""
        if self._closing or self._state == _CLOSED:
            return
        self._closing = True
        if self._state != _OPEN:
            self._close_now()
        elif not self._wbuf:
            self._shutdown()
        else:
            self.deadline = monotonic() + CLOSE_TIMEOUT
            self._open_interest()

    def abort(self) -> None:
        if self._state != _CLOSED:
            self._closing = True
            self._close_now()

    def is_closing(self) -> bool:
        return self._closing or self._state == _CLOSED

    def pause_reading(self) -> None:
        self._reading = False
        if self._state == _OPEN:
            self._open_interest()

    def resume_reading(self) -> None:
        if self._reading:
            return
        self._reading = True
        if self._state == _OPEN:
            self._open_interest()
            self._poller.loop.call_soon(self._read_buffered)  # input OpenSSL read ahead

    def _read_buffered(self) -> None:
        if self._state == _OPEN and self._reading and not self._closing and self._buffered():
            self._read()

    def is_reading(self) -> bool:
        return self._reading and self._state == _OPEN and not self._closing

    def get_write_buffer_size(self) -> int:
        return len(self._wbuf)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (LOW_WATER, HIGH_WATER)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # fixed limits: the proxy streams through, it never needs larger buffers

    def set_protocol(self, protocol: ConnectionProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> ConnectionProtocol | None:
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        try:
            if name == "ssl_object":
                return self._tls
            if name == "sslcontext":
                return self._tls.context
            if name == "socket":
                return self._sock
            if name == "peername":
                return self._sock.getpeername()
            if name == "sockname":
                return self._sock.getsockname()
            if name == "cipher":
                return self._tls.cipher()
            if name == "compression":
                return self._tls.compression()
        except OSError:
            return default
        return default

    # -- ending --------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Send ``close_notify`` and close. The peer's ``close_notify`` is not awaited (as nginx
        does), unless ``linger`` says the request was not read to its end: then closing at once
        would answer the bytes still coming with a reset that can destroy our answer in transit,
        so input is read and dropped for up to ``LINGER_TIMEOUT`` first."""
        pointer, access = self._pointer, self._poller.access
        if pointer and access is not None:
            if access.shutdown(pointer) < 0:  # e.g. the peer is gone: nothing to tell it
                access.clear_errors()
        else:
            try:  # noqa: SIM105 (a context manager per connection costs more than this)
                self._tls.shutdown()  # two SSL_shutdown calls: the second reads, in vain
            except _Fatal:
                pass
        if not self.linger:
            self._close_now()
            return
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close_now()
            return
        self._state = _LINGER
        self.deadline = monotonic() + LINGER_TIMEOUT
        self._interest(_IN)
        self._notify_lost(None)

    def _discard(self) -> None:
        try:
            data = self._sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._teardown()

    def expire(self) -> None:
        """The deadline passed (a handshake too slow, a close whose buffer made no progress
        for ``CLOSE_TIMEOUT``, a lingering close too long)."""
        state = self._state
        if state == _HANDSHAKE:
            self._teardown()
            self._owner.handshake_failed(self, TimeoutError("TLS handshake timed out"))
        elif state == _OPEN:
            if self._closing:  # the peer stopped reading: drop the buffer, the protocol hears
                pending = len(self._wbuf)
                self._reset_on_close()
                self._close_now(
                    TimeoutError(
                        f"peer read nothing for {CLOSE_TIMEOUT:g} s while the connection closed;"
                        f" {pending} buffered bytes dropped"
                    )
                )
        elif state == _LINGER:
            self._teardown()

    def _reset_on_close(self) -> None:
        """Make the close a reset (SO_LINGER 0): what the kernel still holds for a peer that
        reads nothing is freed at once, instead of an orphan socket retransmitting it for
        minutes in FIN-WAIT-1."""
        if self._tcp:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(_SOL_SOCKET, _SO_LINGER, _LINGER_RESET)

    def _fail(self, error: BaseException) -> None:
        log.debug("TLS connection failed: %s", error)
        self._closing = True
        self._close_now(error if isinstance(error, Exception) else None)

    def _close_now(self, error: Exception | None = None) -> None:
        self._teardown()
        self._notify_lost(error)

    def _teardown(self) -> None:
        """Forget and close the socket (closing it also takes it out of the epoll set)."""
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self.deadline = INF
        self._mask = 0
        handlers = self._poller.handlers
        if handlers.get(self._fd) is self:
            del handlers[self._fd]
        self._wbuf = b""
        _close_socket(self._sock)

    def _notify_lost(self, error: Exception | None) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            self._poller.loop.call_soon(protocol.connection_lost, error)


def _wrap(context: ssl.SSLContext, sock: _socket.socket) -> tuple[Any, _socket.socket]:
    """The ``_ssl`` socket object over ``sock`` (server side) without ``ssl.SSLSocket``'s Python
    layer, and the socket that owns the descriptor; ``ssl.SSLSocket`` itself (adapted) if the
    private constructor is not where it used to be."""
    wrap: Callable[..., object] | None = getattr(context, "_wrap_socket", None)
    if wrap is not None:
        try:
            return wrap(sock, True, None, owner=None, session=None), sock
        except TypeError:
            pass
    if not isinstance(sock, socket.socket):  # the public wrapper wants the Python class
        sock = socket.socket(sock.family, sock.type, sock.proto, sock.detach())
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    return _PublicTLS(tls), tls


class _PublicTLS:
    """``ssl.SSLSocket`` with the ``_ssl`` object's method names (TLS ``shutdown``)."""

    def __init__(self, tls: ssl.SSLSocket) -> None:
        self._tls = tls
        self.context = tls.context
        self.do_handshake = tls.do_handshake
        self.read = tls.read
        self.write = tls.write
        self.pending = tls.pending
        self.cipher = tls.cipher
        self.compression = tls.compression
        self.selected_alpn_protocol = tls.selected_alpn_protocol
        self.version = tls.version

    def shutdown(self) -> None:
        self._tls.unwrap()
