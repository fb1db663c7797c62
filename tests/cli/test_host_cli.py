"""`nitrotls host inbound|outbound` and `nitrotls enclave forward` as real processes."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from nitrotls.cli import cli
from nitrotls.transport import AllowListError, VsockModeError, vsock

LISTENING = re.compile(r"listening on (\S+)")


class EchoHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)
        self.request.shutdown(socket.SHUT_WR)


class UnixEcho(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class TCPEcho(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True


@pytest.fixture
def unix_echo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "upstream.sock"
    server = UnixEcho(str(path), EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def tcp_echo() -> Iterator[int]:
    server = TCPEcho(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


class Service:
    """A `nitrotls` subprocess whose stderr is read line by line in a thread."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, NITROTLS_VSOCK="unix")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from nitrotls.cli import main; main()", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.process.stderr is not None
        stream = self.process.stderr
        self._reader = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._reader.start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, pattern: re.Pattern[str], limit: float = 30.0) -> re.Match[str]:
        while True:
            line = self.lines.get(timeout=limit)
            self.seen.append(line)
            if not line:
                raise AssertionError("process ended early:\n" + "".join(self.seen))
            if found := pattern.search(line):
                return found

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, "".join(self.seen)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.kill()


def _tcp_exchange(port: int, payload: bytes) -> bytes:
    """Send (from a thread, so neither side can stall the other) and read until EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:

        def send() -> None:
            with contextlib.suppress(OSError):  # a refused connection may close first
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        sender.join(timeout=30)
    return b"".join(chunks)


@pytest.mark.slow
def test_inbound_relays_bytes_and_stops_on_sigterm(
    unix_echo: Path, services: list[Service]
) -> None:
    inbound = Service(
        "host", "inbound", "--listen", "tcp://127.0.0.1:0", "--to", f"unix://{unix_echo}"
    )
    services.append(inbound)
    bound = inbound.wait_for(LISTENING).group(1)
    port = int(bound.rsplit(":", 1)[1])
    payload = os.urandom(2_000_000)
    assert _tcp_exchange(port, payload) == payload
    code, log = inbound.stop(signal.SIGTERM)
    assert code == 0, log
    assert f"-> unix://{unix_echo}" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_outbound_and_forward_carry_allowed_traffic_only(
    tcp_echo: int, tmp_path: Path, nitrotls_home: Path, services: list[Service]
) -> None:
    allow = tmp_path / "allow.toml"
    allow.write_text(f'[[allow]]\naddress = "127.0.0.1"\nport = {tcp_echo}\n')
    outbound = Service("host", "outbound", "--listen", "vsock://3:8000", "--allow", str(allow))
    services.append(outbound)
    outbound.wait_for(LISTENING)
    dev_socket = nitrotls_home / "run" / "vsock-3-8000.sock"
    assert dev_socket.is_socket()

    ports = []
    for target in (f"127.0.0.1:{tcp_echo}", "127.0.0.1:9"):
        forward = Service(
            "enclave", "forward", "--listen", "tcp://127.0.0.1:0", "--to", "vsock://3:8000",
            "--preamble", target,
        )  # fmt: skip
        services.append(forward)
        ports.append(int(forward.wait_for(LISTENING).group(1).rsplit(":", 1)[1]))

    assert _tcp_exchange(ports[0], b"to kms and back") == b"to kms and back"
    assert _tcp_exchange(ports[1], b"to somewhere else") == b""

    for service in services[1:]:
        code, log = service.stop(signal.SIGINT)
        assert code == 0, log
    code, log = outbound.stop(signal.SIGTERM)
    assert code == 0, log
    assert "outbound refused 127.0.0.1:9" in log
    assert not dev_socket.exists()


def test_bad_address_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        cli, ["host", "inbound", "--listen", "tcp://0.0.0.0", "--to", "vsock://16:443"]
    )
    assert result.exit_code == 2
    assert "expected HOST:PORT" in result.output


def test_bad_allow_list_is_a_typed_error(tmp_path: Path) -> None:
    allow = tmp_path / "allow.toml"
    allow.write_text("[[allow]]\naddress = '*.amazonaws.com'\nport = 443\n")
    result = CliRunner().invoke(
        cli, ["host", "outbound", "--listen", "vsock://3:8000", "--allow", str(allow)]
    )
    assert isinstance(result.exception, AllowListError)


def test_fixed_destination_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    allow = tmp_path / "allow.toml"
    allow.write_text("[[allow]]\naddress = 'kms.us-east-1.amazonaws.com'\nport = 443\n")
    args = ["--listen", "vsock://3:8000", "--allow", str(allow), "--to", "example.com:443"]
    result = CliRunner().invoke(cli, ["host", "outbound", *args])
    assert isinstance(result.exception, AllowListError)


def test_vsock_without_a_mode_fails_closed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(vsock.ENV_VAR, raising=False)
    monkeypatch.setattr(vsock, "_MARKERS", (tmp_path / "nsm",))
    result = CliRunner().invoke(
        cli, ["enclave", "forward", "--listen", "tcp://127.0.0.1:0", "--to", "vsock://3:8000"]
    )
    assert isinstance(result.exception, VsockModeError)


def test_help_lists_the_relays() -> None:
    host = CliRunner().invoke(cli, ["host", "--help"])
    enclave = CliRunner().invoke(cli, ["enclave", "--help"])
    assert "inbound" in host.output and "outbound" in host.output
    assert "forward" in enclave.output
