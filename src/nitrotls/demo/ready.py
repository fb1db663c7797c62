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
            raise NotReadyError(f"{what}: not ready after {timeout:g} s", culprit)
        time.sleep(interval)
        interval = min(interval * 2, MAX_INTERVAL)


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
