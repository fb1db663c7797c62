"""How ``vsock://CID:PORT`` is reached: real AF_VSOCK, or a Unix socket for development.

The choice is explicit and fails closed. ``$NITROTLS_VSOCK`` (or :func:`set_vsock_mode`) says
``vsock`` (use AF_VSOCK), ``unix`` (map to ``<data dir>/run/vsock-<cid>-<port>.sock``) or
``auto``/unset (AF_VSOCK only when this is visibly a Nitro Enclave, ``/dev/nsm``, or its parent,
``/dev/nitro_enclaves``; anything else is a :class:`VsockModeError` telling the user to pick).
There is never a silent fallback from vsock to Unix sockets or back: a production enclave must
not end up talking to a file, and a laptop must not touch a hypervisor's vsock device.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Literal

from nitrotls import home
from nitrotls.transport.address import UNIX_PATH_MAX
from nitrotls.transport.errors import SocketPathTooLongError, VsockModeError

ENV_VAR = "NITROTLS_VSOCK"
VMADDR_CID_ANY = 0xFFFFFFFF
Mode = Literal["vsock", "unix"]

_MARKERS: tuple[Path, ...] = (Path("/dev/nsm"), Path("/dev/nitro_enclaves"))
_override: Mode | None = None
_announced = False
log = logging.getLogger("nitrotls.transport")


def set_vsock_mode(mode: str | None) -> None:
    """Pin the mode for this process (``"vsock"``, ``"unix"``), or ``None`` to use the env."""
    global _override
    _override = None if mode is None else _parse_mode(mode, source="set_vsock_mode")


def vsock_mode() -> Mode:
    """The mode in force; raises :class:`VsockModeError` rather than guess."""
    if _override is not None:
        return _override
    return _parse_mode(os.environ.get(ENV_VAR, "auto"), source=f"${ENV_VAR}")


def _parse_mode(text: str, *, source: str) -> Mode:
    value = text.strip().lower()
    if value == "unix":
        return "unix"
    if value == "vsock":
        if not hasattr(socket, "AF_VSOCK"):
            raise VsockModeError(
                f"{source}=vsock, but this Python has no socket.AF_VSOCK (Linux only); "
                f"use {ENV_VAR}=unix for development"
            )
        return "vsock"
    if value in ("", "auto"):
        return _detect()
    raise VsockModeError(f"{source} must be 'vsock', 'unix' or 'auto', found {text!r}")


def _detect() -> Mode:
    global _announced
    found = [str(path) for path in _MARKERS if path.exists()]
    if found and hasattr(socket, "AF_VSOCK"):
        if not _announced:
            log.info("vsock:// addresses use AF_VSOCK (found %s)", ", ".join(found))
            _announced = True
        return "vsock"
    raise VsockModeError(
        "cannot tell how to reach vsock:// addresses: this is neither a Nitro Enclave "
        "(/dev/nsm) nor its parent (/dev/nitro_enclaves). For development set "
        f"{ENV_VAR}=unix (Unix sockets under {home.data_dir(create=False) / 'run'}); "
        f"to force AF_VSOCK set {ENV_VAR}=vsock"
    )


def dev_socket_path(cid: int, port: int) -> Path:
    """The Unix socket standing in for ``vsock://cid:port`` in development."""
    path = home.sub_dir("run") / f"vsock-{cid}-{port}.sock"
    size = len(os.fsencode(str(path)))
    if size > UNIX_PATH_MAX:
        raise SocketPathTooLongError(
            f"the development socket for vsock://{cid}:{port} would be {str(path)!r} "
            f"({size} bytes), over the kernel's {UNIX_PATH_MAX}-byte limit; "
            "set NITROTLS_HOME to a shorter directory"
        )
    return path


def new_vsock_socket() -> socket.socket:
    """The one place nitrotls opens an AF_VSOCK socket (non-blocking, stream)."""
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        raise VsockModeError("socket.AF_VSOCK is not available on this platform")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock
