"""listen/connect on Unix and TCP, and careful handling of socket files."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from nitrotls.transport import (
    Address,
    AddressError,
    ListenError,
    TransportConnectError,
    bind_socket,
    connect,
    listen,
)
from transport.support import echo, exchange, run


def test_unix_round_trip_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"

    async def scenario() -> bytes:
        async with await listen(Address.unix(path), echo):
            assert path.is_socket()
            return await exchange(await connect(Address.unix(path)), b"x" * 200_000)

    assert run(scenario()) == b"x" * 200_000
    assert not path.exists()


def test_unix_connect_waits_for_room_in_a_full_backlog(tmp_path: Path) -> None:
    path = tmp_path / "busy.sock"

    async def scenario() -> list[bytes]:
        async with await listen(Address.unix(path), echo, backlog=1):

            async def one(index: int) -> bytes:
                return await exchange(await connect(Address.unix(path)), b"%d" % index)

            return await asyncio.gather(*(one(index) for index in range(60)))

    assert run(scenario()) == [b"%d" % index for index in range(60)]


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays behind, nobody listens

    async def scenario() -> bytes:
        async with await listen(Address.unix(path), echo):
            return await exchange(await connect(Address.unix(path)), b"fresh")

    assert run(scenario()) == b"fresh"


def test_live_socket_is_not_stolen(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"

    async def scenario() -> None:
        async with await listen(Address.unix(path), echo):
            with pytest.raises(ListenError, match="another process is listening"):
                await listen(Address.unix(path), echo)
            assert await exchange(await connect(Address.unix(path)), b"still mine") == (
                b"still mine"
            )

    run(scenario())


def test_non_socket_file_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    with pytest.raises(ListenError, match="not a socket"):
        run(listen(Address.unix(path), echo))
    assert path.read_text() == "keep me"


def test_close_leaves_a_successors_socket_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"

    async def scenario() -> None:
        listener = await listen(Address.unix(path), echo)
        path.unlink()
        successor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        successor.bind(str(path))
        try:
            listener.close()
            await listener.wait_closed()
            assert path.is_socket()
        finally:
            successor.close()

    run(scenario())


def test_listen_in_missing_directory_is_typed(tmp_path: Path) -> None:
    with pytest.raises(ListenError, match="cannot listen"):
        run(listen(Address.unix(tmp_path / "no" / "such" / "dir.sock"), echo))


def test_tcp_ephemeral_port_is_reported() -> None:
    async def scenario() -> tuple[int, bytes]:
        async with await listen(Address.tcp("127.0.0.1", 0), echo) as listener:
            port = listener.address.port
            return port, await exchange(await connect(listener.address), b"tcp")

    port, reply = run(scenario())
    assert port > 0
    assert reply == b"tcp"


def test_tcp_port_in_use_is_typed() -> None:
    async def scenario() -> None:
        async with await listen(Address.tcp("127.0.0.1", 0), echo) as first:
            holder = socket.socket()
            try:
                holder.bind(("127.0.0.1", 0))
                holder.listen()
                taken = Address.tcp("127.0.0.1", holder.getsockname()[1])
                with pytest.raises(ListenError, match=r"cannot listen on tcp://127\.0\.0\.1"):
                    await listen(taken, echo)
            finally:
                holder.close()
            assert first.address.port > 0

    run(scenario())


def test_connect_failures_are_typed(tmp_path: Path) -> None:
    with pytest.raises(TransportConnectError, match="cannot connect to unix://"):
        run(connect(Address.unix(tmp_path / "nobody.sock")))
    with pytest.raises(TransportConnectError, match="vsock://16:443 \\(dev: unix://"):
        run(connect(Address.vsock(16, 443)))
    with pytest.raises(AddressError, match="port 0"):
        run(connect(Address.tcp("127.0.0.1", 0)))


def test_connect_refused_on_tcp_is_typed() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    holder.close()  # bound once, now nobody listens on it
    with pytest.raises(TransportConnectError, match=f"127.0.0.1:{port}"):
        run(connect(Address.tcp("127.0.0.1", port)))


def test_bind_socket_hands_servers_a_listening_socket(tmp_path: Path, nitrotls_home: Path) -> None:
    async def serve_on(sock: socket.socket, dial: Address) -> bytes:
        server = await asyncio.start_server(echo, sock=sock)
        try:
            return await exchange(await connect(dial), b"via bind_socket")
        finally:
            server.close()
            await server.wait_closed()

    tcp = bind_socket(Address.tcp("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    assert run(serve_on(tcp, Address.tcp("127.0.0.1", port))) == b"via bind_socket"
    mapped = Address.vsock(16, 443)
    unix = bind_socket(mapped)
    assert (nitrotls_home / "run" / "vsock-16-443.sock").is_socket()
    assert run(serve_on(unix, mapped)) == b"via bind_socket"
