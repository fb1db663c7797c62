"""The TLS listener's socket (bound by nitrotls.transport) and its accept path."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import stat
import weakref
from pathlib import Path

import pytest

from nitrotls.server.errors import ListenError
from nitrotls.server.identity import ContextHolder
from nitrotls.server.listener import ListeningSocket
from nitrotls.server.runtime import ServeOptions, Upstream
from nitrotls.server.tls import DirectSSLObject, policy_context
from nitrotls.transport import vsock
from nitrotls.transport.address import Address

from .conftest import PKI, read_response, running, served_from, upstream_server


def test_unix_listener_is_owner_only_and_removed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "tls.sock"
    listening = ListeningSocket.open(Address.parse(f"unix://{path}"), 8)
    assert listening.sock.family == socket.AF_UNIX
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    listening.close()
    assert not path.exists()


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "tls.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays behind, nobody listens on it
    listening = ListeningSocket.open(Address.parse(f"unix://{path}"), 8)
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
    listening.close()


def test_live_socket_is_never_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "tls.sock"
    first = ListeningSocket.open(Address.parse(f"unix://{path}"), 8)
    try:
        with pytest.raises(ListenError, match="another process is listening") as caught:
            ListeningSocket.open(Address.parse(f"unix://{path}"), 8)
        assert caught.value.exit_code == 71
        assert path.exists()
    finally:
        first.close()


def test_a_file_in_the_way_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "tls.sock"
    path.write_text("precious")
    with pytest.raises(ListenError, match="not a socket"):
        ListeningSocket.open(Address.parse(f"unix://{path}"), 8)
    assert path.read_text() == "precious"


def test_close_leaves_a_file_that_is_no_longer_ours(tmp_path: Path) -> None:
    path = tmp_path / "tls.sock"
    listening = ListeningSocket.open(Address.parse(f"unix://{path}"), 8)
    path.unlink()
    path.write_text("someone else's")
    listening.close()
    assert path.read_text() == "someone else's"


def test_vsock_maps_to_a_unix_socket_in_development() -> None:
    address = Address.parse("vsock://16:4443")
    listening = ListeningSocket.open(address, 8)
    try:
        assert listening.sock.family == socket.AF_UNIX
        assert listening.path == vsock.dev_socket_path(16, 4443)
        assert listening.path is not None and listening.path.exists()
    finally:
        listening.close()


def test_accepted_sockets_know_their_family_and_type() -> None:
    listening = ListeningSocket.open(Address.parse("tcp://127.0.0.1:0"), 8)
    port = listening.sock.getsockname()[1]
    try:
        with socket.create_connection(("127.0.0.1", port)):
            conn, peer = listening.accept()
            try:
                assert (conn.family, conn.type) == (socket.AF_INET, socket.SOCK_STREAM)
                assert peer[0] == "127.0.0.1" and conn.getpeername() == peer
                assert weakref.ref(conn)() is conn  # what _ssl needs
                wrapped = listening.wrap(conn)  # for the loop's socket methods
                with wrapped:
                    assert isinstance(wrapped, socket.socket) and wrapped.getpeername() == peer
                    assert conn.fileno() == -1  # the descriptor moved, not duplicated
            finally:
                conn.close()
    finally:
        listening.close()


def test_tcp_listener_hands_tcp_nodelay_to_its_connections() -> None:
    listening = ListeningSocket.open(Address.parse("tcp://127.0.0.1:0"), 8)
    port = listening.sock.getsockname()[1]
    try:
        assert listening.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert listening.nodelay_inherited is None  # learnt from the first connection
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port)):
                conn, _peer = listening.accept()
                try:
                    actual = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                    assert listening.check_nodelay(conn) is actual
                    assert listening.nodelay_inherited is actual
                finally:
                    conn.close()
    finally:
        listening.close()


def test_unix_listener_never_claims_tcp_nodelay(tmp_path: Path) -> None:
    listening = ListeningSocket.open(Address.parse(f"unix://{tmp_path / 's.sock'}"), 8)
    try:
        assert listening.nodelay_inherited is False
    finally:
        listening.close()


def test_tcp_listen_failure_is_a_listen_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as caught:
            ListeningSocket.open(Address.parse(f"tcp://127.0.0.1:{port}"), 8)
    assert caught.value.exit_code == 71


# -- TLS on a Unix listener, through the task-free path, on both event loops ------------------


def test_direct_ssl_object_binds_the_ssl_methods() -> None:
    server = policy_context()
    sslobj = server.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    assert isinstance(sslobj, DirectSSLObject)
    assert sslobj.read.__self__ is sslobj._sslobj  # type: ignore[attr-defined]
    assert sslobj.unwrap.__name__ == "shutdown"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_proxy_serves_on_a_mapped_vsock_listener(pki: PKI, loop: str) -> None:
    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up:
            options = ServeOptions(
                listen=Address.parse("vsock://16:4444"), upstream=Upstream.parse(up.url)
            )
            async with running(options, holder) as server:
                path = vsock.dev_socket_path(16, 4444)
                for _ in range(3):  # several connections, each its own handshake
                    reader, writer = await asyncio.open_unix_connection(
                        str(path), ssl=pki.client_context(), server_hostname="localhost"
                    )
                    writer.write(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    status, _, _ = await read_response(reader)
                    assert status == 200
                    writer.close()
                assert server.metrics.handshakes == 3
            assert not path.exists()

    if loop == "uvloop":
        pytest.importorskip("uvloop").run(scenario())
    else:
        asyncio.run(scenario())


def test_real_vsock_is_served_by_the_asyncio_loop() -> None:
    from nitrotls.server.app import _real_vsock

    address = Address.parse("vsock://16:443")
    assert not _real_vsock(address)  # the development mapping: a Unix socket, uvloop is fine
    vsock.set_vsock_mode("vsock")  # only decides; no socket is opened here
    assert _real_vsock(address)
    assert not _real_vsock(Address.parse("tcp://127.0.0.1:443"))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_accepted_tcp_connections_have_nodelay(pki: PKI, loop: str) -> None:
    """The response and close_notify must not wait for a delayed ACK: accepted TCP sockets get
    TCP_NODELAY on both event loops."""

    async def scenario() -> None:
        holder = ContextHolder(served_from(pki.issue()))
        async with upstream_server() as up:
            options = ServeOptions(
                listen=Address.parse("tcp://127.0.0.1:0"), upstream=Upstream.parse(up.url)
            )
            async with running(options, holder) as server:
                assert server.address is not None
                for _ in range(2):  # the first connection teaches the listener what is inherited
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1",
                        server.address.port,
                        ssl=pki.client_context(),
                        server_hostname="localhost",
                    )
                    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    assert (await read_response(reader))[0] == 200
                    (conn,) = server.registry.connections
                    raw = conn.transport.get_extra_info("socket")  # type: ignore[attr-defined]
                    assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                    writer.close()
                    async with asyncio.timeout(10):
                        while server.registry.connections:
                            await asyncio.sleep(0.01)

    if loop == "uvloop":
        pytest.importorskip("uvloop").run(scenario())
    else:
        asyncio.run(scenario())
