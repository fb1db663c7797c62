"""Bounded readiness checks: poll until a service answers, its process dies, or time runs out.

No fixed sleeps: each check polls with a short, growing interval and gives up at a deadline,
and a child that exits while we wait ends the wait at once with its log's tail.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from nitrotls.demo.errors import DemoError
from nitrotls.demo.procs import Child

FIRST_INTERVAL = 0.01
MAX_INTERVAL = 0.2


class NotReadyError(DemoError):
    """A service did not come up: its process ended, or the wait timed out."""

    def __init__(self, message: str, child: Child | None = None) -> None:
        super().__init__(message)
        self.child = child


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    watch: Sequence[Child] = (),
) -> float:
    """Poll ``check`` until it is true; returns the seconds waited."""
    start = time.monotonic()
    deadline = start + timeout
    interval = FIRST_INTERVAL
    while True:
        for child in watch:
            if not child.alive():
                raise NotReadyError(f"{child.exit_reason()} before {what}", child)
        if check():
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            culprit = watch[0] if watch else None
            who = f"{culprit.name} " if culprit else ""
            raise NotReadyError(f"{who}still not {what} after {timeout:g} s", culprit)
        time.sleep(interval)
        interval = min(interval * 2, MAX_INTERVAL)


def listens_tcp(child: Child, port: int) -> Callable[[], bool]:
    """True once ``child`` itself holds a listening TCP socket on ``port``.

    Read from ``/proc`` (no connection is made, so nothing shows up in the child's log, and a
    stranger already listening on the port does not count). Without ``/proc``, a connect probe.
    """
    if not _PROC_NET.is_dir():
        return tcp_accepts("127.0.0.1", port)

    def check() -> bool:
        listeners = _tcp_listeners(port)
        return bool(listeners) and not listeners.isdisjoint(_socket_inodes(child.pid))

    return check


def listens_unix(child: Child, path: Path) -> Callable[[], bool]:
    """True once ``child`` itself listens on the Unix socket ``path`` (``/proc``, as above)."""
    if not _PROC_NET.is_dir():
        return unix_accepts(path)

    def check() -> bool:
        listeners = _unix_listeners(path)
        return bool(listeners) and not listeners.isdisjoint(_socket_inodes(child.pid))

    return check


_PROC_NET = Path("/proc/self/net")
_TCP_LISTEN = "0A"
_UNIX_LISTENING = 0x00010000  # __SO_ACCEPTCON


def _tcp_listeners(port: int) -> set[int]:
    """Inodes of sockets in LISTEN state on ``port`` (IPv4 and IPv6)."""
    found: set[int] = set()
    for table in ("tcp", "tcp6"):
        for fields in _rows(_PROC_NET / table):
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            _address, _, port_hex = fields[1].rpartition(":")
            if int(port_hex, 16) == port:
                found.add(int(fields[9]))
    return found


def _unix_listeners(path: Path) -> set[int]:
    found: set[int] = set()
    for fields in _rows(_PROC_NET / "unix"):
        if len(fields) >= 8 and fields[7] == str(path) and int(fields[3], 16) & _UNIX_LISTENING:
            found.add(int(fields[6]))
    return found


def _rows(table: Path) -> list[list[str]]:
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return []
    return [line.split() for line in lines]


def _socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` has open."""
    directory = Path(f"/proc/{pid}/fd")
    found: set[int] = set()
    try:
        entries = list(directory.iterdir())
    except OSError:
        return found
    for entry in entries:
        with contextlib.suppress(OSError, ValueError):
            target = str(entry.readlink())
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    return found


def tcp_accepts(host: str, port: int) -> Callable[[], bool]:
    """True once something accepts TCP connections on ``host:port``."""

    def check() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        return False

    return check


def unix_accepts(path: Path) -> Callable[[], bool]:
    """True once something listens on the Unix socket ``path``."""

    def check() -> bool:
        if not path.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.connect(str(path))
            except OSError:
                return False
            return True

    return check


def http_answers(
    url: str, *, verify: ssl.SSLContext | bool = False, status: int | None = None
) -> Callable[[], bool]:
    """True once ``url`` answers HTTP (with ``status``, when given)."""

    def check() -> bool:
        try:
            response = httpx.get(url, verify=verify, timeout=1.0, trust_env=False)
        except httpx.HTTPError:
            return False
        return status is None or response.status_code == status

    return check
