"""The TLS transport over the socket itself: handshakes, read-ahead, flow control, closing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nitrotls.server import tls as tls_module
from nitrotls.server.identity import ContextHolder
from nitrotls.server.listener import ListenSettings
from nitrotls.server.tls import ssl_access
from nitrotls.server.tlsconn import Poller, TLSTransport

from .conftest import (
    PKI,
    Exchange,
    open_tls,
    port_of,
    proxy_options,
    read_response,
    running,
    served_from,
    upstream_server,
)

options = proxy_options  # proxy-mode ServeOptions (tests/server/conftest.py)


def run(scenario: Any, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop").run(scenario())
    else:
        asyncio.run(scenario())


@pytest.fixture(params=["direct", "portable"])
def ssl_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the transport reaches OpenSSL: through the confirmed ``SSL*`` (read-ahead,
    one-call shutdown) and, as on an interpreter whose layout is not known, without it."""
    if request.param == "portable":
        monkeypatch.setattr(tls_module, "_access_cache", [None])
    elif ssl_access() is None:
        pytest.skip("this interpreter's _ssl layout is not a checked one: no direct path")
    return str(request.param)


def test_the_ssl_pointer_is_found_on_checked_releases() -> None:
    """Read-ahead and the single-call shutdown depend on it: on a checked CPython release it
    must be confirmed; on any other interpreter the probe must not even be tried."""
    access = ssl_access()
    if tls_module._layout_known():
        assert access is not None
        assert access.offset % 8 == 0
    else:
        assert access is None


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_silent_client_is_cut_at_the_handshake_deadline(pki: PKI, loop: str) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        limits = ListenSettings(handshake_timeout=0.3, tick=0.05)
        async with (
            upstream_server() as up,
            running(options(up.url, listener=limits), holder) as s,
        ):
            silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port_of(s))
            reader, writer = await open_tls(port_of(s), pki.client_context())
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            assert await asyncio.wait_for(silent_reader.read(), 10) == b""
            assert s.metrics.handshake_failures == 1
            assert s.metrics.handshakes == 1
            silent_writer.close()
            writer.close()

    run(scenario, loop)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_plain_http_on_the_tls_port_fails_the_handshake_only(pki: PKI, loop: str) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up, running(options(up.url), holder) as s:
            plain_reader, plain_writer = await asyncio.open_connection("127.0.0.1", port_of(s))
            plain_writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            answer = await asyncio.wait_for(plain_reader.read(), 10)
            assert not answer.startswith(b"HTTP/")  # at most a TLS alert, never HTTP
            assert s.metrics.handshake_failures == 1
            reader, writer = await open_tls(port_of(s), pki.client_context())
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            writer.close()

    run(scenario, loop)


RawTLS = tuple[
    asyncio.AbstractEventLoop, socket.socket, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO
]


@contextlib.asynccontextmanager
async def raw_tls(pki: PKI, port: int) -> AsyncIterator[RawTLS]:
    """A TLS client whose every byte on the wire the test controls: a non-blocking socket and
    an ``SSLObject`` over memory BIOs, handshake done."""
    ev = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    with sock:
        tls, incoming, outgoing = await _bio_handshake(ev, sock, pki.client_context())
        yield ev, sock, tls, incoming, outgoing


async def _bio_handshake(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, ctx: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            await loop.sock_sendall(sock, outgoing.read())
            data = await loop.sock_recv(sock, 65536)
            assert data, "server closed during the handshake"
            incoming.write(data)
    await loop.sock_sendall(sock, outgoing.read())
    return tls, incoming, outgoing


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_many_records_in_one_segment_are_all_read(pki: PKI, loop: str, ssl_path: str) -> None:
    """OpenSSL reads ahead: records it holds are not visible to epoll, so the transport must
    keep reading them itself (three requests, three records, one send)."""

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up, running(options(up.url), holder) as s:
            async with raw_tls(pki, port_of(s)) as (ev, sock, tls, incoming, outgoing):
                for path in (b"/one", b"/two", b"/three"):
                    tls.write(b"GET " + path + b" HTTP/1.1\r\nHost: h\r\n\r\n")
                await ev.sock_sendall(sock, outgoing.read())  # three records at once
                received = b""
                async with asyncio.timeout(10):
                    while received.count(b"HTTP/1.1 200") < 3 or b'"/three"' not in received:
                        data = await ev.sock_recv(sock, 65536)
                        assert data, f"closed early after {received!r}"
                        incoming.write(data)
                        try:
                            while chunk := tls.read(65536):
                                received += chunk
                        except ssl.SSLWantReadError:
                            pass
            order = [received.find(p) for p in (b'"/one"', b'"/two"', b'"/three"')]
            assert -1 not in order and order == sorted(order)

    run(scenario, loop)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_large_answer_to_a_slow_reader_arrives_whole(pki: PKI, loop: str, ssl_path: str) -> None:
    """Socket full: the transport buffers, tells the proxy to pause upstream, resumes, and
    every byte arrives in order."""
    body = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32)

    async def big(exchange: Exchange) -> None:
        await exchange.reply(200, body)

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server(big) as up, running(options(up.url), holder) as s:
            reader, writer = await open_tls(port_of(s), pki.client_context())
            writer.write(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200")
            received = bytearray()
            async with asyncio.timeout(30):
                while len(received) < len(body):
                    received += await reader.read(65536)
                    if len(received) < 512 * 1024:
                        await asyncio.sleep(0.01)  # slow at first: the server must buffer
            assert bytes(received) == body
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")  # and the connection still works
            assert (await read_response(reader))[0] == 200
            writer.close()

    run(scenario, loop)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_error_answer_ends_without_a_reset_while_the_client_sends(
    pki: PKI, loop: str, ssl_path: str
) -> None:
    """A 431 closes the connection while the client is still sending: the server lingers
    (reads and drops) instead of closing at once, which would answer the bytes still coming
    with a reset that some stacks let destroy the unread answer."""

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with (
            upstream_server() as up,
            running(options(up.url), holder) as s,
            raw_tls(pki, port_of(s)) as (ev, sock, tls, incoming, outgoing),
        ):
            tls.write(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 20000)
            await ev.sock_sendall(sock, outgoing.read())
            answer = b""
            async with asyncio.timeout(10):
                while True:
                    data = await ev.sock_recv(sock, 65536)
                    if not data:
                        break  # the server's FIN, after its close_notify
                    incoming.write(data)
                    with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                        answer += tls.read(65536)
            assert answer.startswith(b"HTTP/1.1 431")
            for _ in range(3):  # more of the request, after the server closed its side
                await ev.sock_sendall(sock, b"b" * 4096)
                await asyncio.sleep(0.05)
            assert await ev.sock_recv(sock, 65536) == b""  # no ECONNRESET

    run(scenario, loop)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_connection_close_exchange_ends_with_answer_close_notify_and_fin(
    pki: PKI, loop: str, ssl_path: str
) -> None:
    """The last answer of a ``Connection: close`` exchange (``write_last``; on the direct path
    it closes inline): the whole answer, then the server's close_notify, then its FIN; the
    connection is forgotten everywhere and counted closed."""

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up, running(options(up.url), holder) as s:
            async with raw_tls(pki, port_of(s)) as (ev, sock, tls, incoming, outgoing):
                tls.write(b"GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                await ev.sock_sendall(sock, outgoing.read())
                answer, notified = b"", False
                async with asyncio.timeout(10):
                    while True:
                        data = await ev.sock_recv(sock, 65536)
                        if not data:
                            break
                        assert not notified, "bytes after close_notify"
                        incoming.write(data)
                        try:
                            while chunk := tls.read(65536):
                                answer += chunk
                            notified = True  # an empty read: the peer's close_notify
                        except ssl.SSLWantReadError:
                            pass
                        except ssl.SSLZeroReturnError:
                            notified = True
                assert notified, "no close_notify before the FIN"
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
                assert b'"/bye"' in body
            async with asyncio.timeout(10):
                while s.registry.connections:
                    await asyncio.sleep(0.01)
            listener = s.listener
            assert listener is not None and listener._poller is not None
            assert not listener._poller.handlers
            assert s.metrics.connections_active == 0 and s.metrics.handshakes == 1

    run(scenario, loop)


@pytest.mark.parametrize("nodelay", [False, True])
def test_transport_sets_tcp_nodelay_unless_the_socket_has_it(pki: PKI, nodelay: bool) -> None:
    """``nodelay=True`` says the accepted socket already has TCP_NODELAY (inherited from the
    listener): the transport then leaves it alone; otherwise it sets it."""

    async def scenario() -> None:
        ev = asyncio.get_running_loop()
        poller = Poller(ev)
        context = served_from(pki.issue()).context
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            with socket.create_connection(listener.getsockname()) as client:
                conn, _ = listener.accept()
                before = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                transport = TLSTransport(
                    poller, conn, context, _Owner(asyncio.Protocol()), 10.0, nodelay=nodelay
                )
                after = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                transport.abort()
                client.close()
        poller.close()
        assert not before
        assert bool(after) is not nodelay

    asyncio.run(scenario())


class _Owner:
    """A minimal handshake owner: hands every connection to one protocol."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol
        self.failures: list[BaseException] = []

    def handshake_done(self, transport: TLSTransport) -> asyncio.Protocol | None:
        return self.protocol

    def handshake_failed(self, transport: TLSTransport, error: BaseException) -> None:
        self.failures.append(error)


class _Broken(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        raise RuntimeError("a bug in the protocol")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_protocol_that_raises_loses_only_its_connection(pki: PKI, loop: str) -> None:
    async def scenario() -> None:
        ev = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        poller = Poller(ev)
        protocol = _Broken()
        owner = _Owner(protocol)
        context = served_from(pki.issue()).context
        with listener:
            connecting = asyncio.create_task(
                open_tls(listener.getsockname()[1], pki.client_context())
            )
            conn, _ = await ev.sock_accept(listener)
            transport = TLSTransport(poller, conn, context, owner, 10.0)
            reader, writer = await asyncio.wait_for(connecting, 10)
            writer.write(b"hello")
            assert await asyncio.wait_for(protocol.lost, 10) is None
            assert transport.is_closing() and not owner.failures
            assert not poller.handlers  # forgotten, socket closed
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        poller.close()

    run(scenario, loop)


class _Recorder(asyncio.Protocol):
    """Records the transport and how the connection ended; reads nothing of interest."""

    def __init__(self) -> None:
        ev = asyncio.get_running_loop()
        self.made: asyncio.Future[None] = ev.create_future()
        self.lost: asyncio.Future[Exception | None] = ev.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


_CLOSING_ANSWER = hashlib.sha256(b"closing").digest() * (1024 * 1024 // 32)  # 1 MiB


@contextlib.asynccontextmanager
async def closing_with_a_buffer(
    pki: PKI,
) -> AsyncIterator[tuple[TLSTransport, Poller, _Recorder, RawTLS]]:
    """A transport told to close with most of a 1 MiB answer still in its own buffer: both
    socket buffers are small and the client has read nothing yet."""
    ev = asyncio.get_running_loop()
    poller = Poller(ev)
    protocol = _Recorder()
    context = served_from(pki.issue()).context
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # before connect: window
        client.setblocking(False)
        with client:
            connecting = ev.create_task(ev.sock_connect(client, listener.getsockname()))
            conn, _ = await ev.sock_accept(listener)
            await connecting
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            transport = TLSTransport(poller, conn, context, _Owner(protocol), 10.0)
            try:
                tls, incoming, outgoing = await asyncio.wait_for(
                    _bio_handshake(ev, client, pki.client_context()), 10
                )
                await asyncio.wait_for(protocol.made, 10)
                transport.write(_CLOSING_ANSWER)
                transport.close()
                yield transport, poller, protocol, (ev, client, tls, incoming, outgoing)
            finally:
                transport.abort()
                poller.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_closing_connection_whose_peer_stops_reading_is_aborted_at_its_deadline(
    pki: PKI, loop: str, ssl_path: str
) -> None:
    """``close()`` with data buffered waits for it to drain, but not forever: once the deadline
    passes with no progress, the sweep drops the buffer and the protocol hears of it (a client
    that never reads its large answer must not hold a connection slot)."""

    async def scenario() -> None:
        async with closing_with_a_buffer(pki) as (transport, poller, protocol, raw):
            ev, client = raw[0], raw[1]
            for _ in range(5):  # let the kernel buffers fill: the client reads nothing
                await asyncio.sleep(0)
            assert transport.is_closing() and transport.get_write_buffer_size() > 0
            deadline = transport.deadline
            assert deadline != float("inf"), "a closing connection with data left has no deadline"
            poller.sweep(deadline)  # not past it yet
            assert poller.handlers and not protocol.lost.done()
            poller.sweep(deadline + 0.001)
            assert not poller.handlers and transport.get_write_buffer_size() == 0
            error = await asyncio.wait_for(protocol.lost, 10)
            assert isinstance(error, TimeoutError) and "dropped" in str(error)
            # The client's side sees a reset, not the rest of the answer and a FIN: the kernel
            # dropped what it held for this peer instead of retransmitting it for minutes.
            async with asyncio.timeout(10):
                with pytest.raises(ConnectionResetError):
                    while await ev.sock_recv(client, 65536):
                        pass

    run(scenario, loop)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_closing_connection_whose_peer_reads_keeps_going_until_drained(
    pki: PKI, loop: str, ssl_path: str
) -> None:
    """Every flush that sends something while closing pushes the deadline forward: a sweep at
    the first deadline does not cut a client that is reading, which then gets every byte, the
    close_notify and the FIN, and the protocol a clean ``connection_lost``."""

    async def scenario() -> None:
        async with closing_with_a_buffer(pki) as (transport, poller, protocol, raw):
            ev, client, tls, incoming, _ = raw
            first = transport.deadline
            assert first != float("inf"), "a closing connection with data left has no deadline"
            received, notified = bytearray(), False

            async def read_some() -> bool:
                nonlocal notified
                data = await ev.sock_recv(client, 65536)
                if not data:
                    return False
                incoming.write(data)
                try:
                    while chunk := tls.read(65536):
                        received.extend(chunk)
                    notified = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:
                    notified = True
                return True

            async with asyncio.timeout(10):
                while transport.deadline <= first and poller.handlers:
                    assert await read_some(), "closed before the answer was drained"
            later = transport.deadline
            assert transport.get_write_buffer_size() > 0, "drained before any progress was seen"
            assert first < later != float("inf")  # progress pushed it forward
            poller.sweep(later)  # past the first deadline, not past the current one
            assert not protocol.lost.done()
            async with asyncio.timeout(30):
                while await read_some():
                    pass
            assert notified, "no close_notify before the FIN"
            assert bytes(received) == _CLOSING_ANSWER
            assert await asyncio.wait_for(protocol.lost, 10) is None
            assert not poller.handlers

    run(scenario, loop)
