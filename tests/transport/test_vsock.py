"""How vsock:// is reached: explicit modes, fail-closed detection, the Unix mapping."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from nitrotls import home
from nitrotls.transport import (
    Address,
    ListenError,
    SocketPathTooLongError,
    VsockModeError,
    connect,
    dev_socket_path,
    listen,
    set_vsock_mode,
    socket_path,
    vsock,
    vsock_mode,
)
from nitrotls.transport import sockets as sockets_module
from transport.support import echo, exchange, run


def test_unix_mode_from_environment() -> None:
    assert vsock_mode() == "unix"


def test_unknown_mode_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vsock.ENV_VAR, "maybe")
    with pytest.raises(VsockModeError, match="'vsock', 'unix' or 'auto'"):
        vsock_mode()


@pytest.mark.parametrize("value", ["auto", ""])
def test_auto_without_nitro_devices_fails_closed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv(vsock.ENV_VAR, value)
    monkeypatch.setattr(vsock, "_MARKERS", (tmp_path / "nsm", tmp_path / "nitro_enclaves"))
    with pytest.raises(VsockModeError, match="NITROTLS_VSOCK=unix"):
        vsock_mode()


def test_auto_detection_without_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(vsock.ENV_VAR)
    monkeypatch.setattr(vsock, "_MARKERS", (tmp_path / "nsm",))
    with pytest.raises(VsockModeError):
        vsock_mode()
    (tmp_path / "nsm").touch()  # looks like an enclave now: AF_VSOCK is chosen (never opened)
    assert vsock_mode() == "vsock"


def test_explicit_override_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vsock.ENV_VAR, "bogus")
    set_vsock_mode("unix")
    assert vsock_mode() == "unix"
    with pytest.raises(VsockModeError):
        set_vsock_mode("sometimes")


def test_dev_socket_lives_in_the_private_run_directory(nitrotls_home: Path) -> None:
    path = dev_socket_path(16, 443)
    assert path == nitrotls_home / "run" / "vsock-16-443.sock"
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert socket_path(Address.vsock(16, 443)) == path


def test_overlong_data_dir_gives_typed_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    deep = tmp_path / ("d" * 100)
    monkeypatch.setenv(home.ENV_VAR, str(deep))
    with pytest.raises(SocketPathTooLongError, match="NITROTLS_HOME"):
        dev_socket_path(16, 443)


def test_vsock_listen_and_connect_use_the_mapped_socket(nitrotls_home: Path) -> None:
    address = Address.vsock(16, 443)

    async def scenario() -> bytes:
        async with await listen(address, echo) as listener:
            assert (nitrotls_home / "run" / "vsock-16-443.sock").is_socket()
            assert listener.address == address
            reply = await exchange(await connect(address), b"through the mapping")
        assert not (nitrotls_home / "run" / "vsock-16-443.sock").exists()
        return reply

    assert run(scenario()) == b"through the mapping"


class _RecordingSocket:
    """Stands in for an AF_VSOCK socket: records the bind, fails at listen."""

    def __init__(self) -> None:
        self.bound: Any = None
        self.closed = False

    def bind(self, address: Any) -> None:
        self.bound = address

    def listen(self, backlog: int) -> None:
        raise OSError(98, "Address already in use")

    def close(self) -> None:
        self.closed = True


def test_real_vsock_listener_binds_any_cid_and_reports_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _RecordingSocket()
    monkeypatch.setattr(vsock, "new_vsock_socket", lambda: fake)
    if not hasattr(socket, "AF_VSOCK"):
        pytest.skip("this platform has no AF_VSOCK")
    set_vsock_mode("vsock")

    async def noop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    with pytest.raises(ListenError, match="vsock://16:443"):
        run(sockets_module.listen(Address.vsock(16, 443), noop))
    assert fake.bound == (vsock.VMADDR_CID_ANY, 443)
    assert fake.closed
