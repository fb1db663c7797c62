"""Every transport test maps vsock to Unix sockets and can never open a real AF_VSOCK socket."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nitrotls.transport import vsock


@pytest.fixture(autouse=True)
def unix_vsock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Force the development mapping, and make any attempt at a real AF_VSOCK socket fail."""

    def refuse() -> Any:
        raise AssertionError("a test tried to open an AF_VSOCK socket")

    monkeypatch.setenv(vsock.ENV_VAR, "unix")
    monkeypatch.setattr(vsock, "new_vsock_socket", refuse)
    vsock.set_vsock_mode(None)
    yield
    vsock.set_vsock_mode(None)
