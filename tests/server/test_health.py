"""The health listener binds like the TLS listener: local schemes only, owner-only Unix socket
files, a live socket never taken over, failures typed (no traceback)."""

from __future__ import annotations

import asyncio
import socket
import stat
from pathlib import Path

import pytest

from nitrotls.server.errors import ListenError, ServerConfigError
from nitrotls.server.health import HealthServer
from nitrotls.server.identity import ContextHolder
from nitrotls.server.metrics import Metrics
from nitrotls.transport.address import Address


def start(address: str) -> HealthServer:
    return HealthServer(Address.parse(address), ContextHolder(), Metrics())


async def get(path: Path, target: str) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    return answer


def test_unix_socket_is_owner_only_and_removed_at_close(tmp_path: Path) -> None:
    path = tmp_path / "health.sock"

    async def scenario() -> None:
        server = start(f"unix://{path}")
        await server.start()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert (await get(path, "/healthz")).startswith(b"HTTP/1.1 200")
        await server.close()
        assert not path.exists()

    asyncio.run(scenario())


def test_a_live_unix_socket_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))
    other.listen()
    try:

        async def scenario() -> None:
            with pytest.raises(ListenError) as caught:
                await start(f"unix://{path}").start()
            assert caught.value.exit_code == 71

        asyncio.run(scenario())
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))  # still the other process's socket
        conn, _ = other.accept()
        conn.close()
        probe.close()
    finally:
        other.close()


def test_a_port_in_use_is_a_listen_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:

        async def scenario() -> None:
            with pytest.raises(ListenError):
                await start(f"tcp://127.0.0.1:{taken.getsockname()[1]}").start()

        asyncio.run(scenario())
    finally:
        taken.close()


def test_vsock_health_is_a_configuration_error() -> None:
    async def scenario() -> None:
        with pytest.raises(ServerConfigError):
            await start("vsock://16:9901").start()  # refused before any socket is made

    asyncio.run(scenario())
