"""Fixtures every test may use: a private data directory, the shared vectors, system tools."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nitrotls import home
from nitrotls.transport import vsock

from system_tools import IN_CI, REPO, require_tool, shared_root

__all__ = ["REPO", "require_tool"]


@pytest.fixture(autouse=True)
def nitrotls_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test gets its own empty data directory; nothing touches the user's real one."""
    path = tmp_path_factory.mktemp("home")
    monkeypatch.setenv(home.ENV_VAR, str(path))
    home.set_home(None)
    yield path
    home.set_home(None)


@pytest.fixture(autouse=True)
def unix_vsock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """vsock:// maps to Unix sockets in every test; a real AF_VSOCK socket is a test failure
    (this machine's vsock device belongs to its host)."""

    def refuse() -> Any:
        raise AssertionError("a test tried to open an AF_VSOCK socket")

    monkeypatch.setenv(vsock.ENV_VAR, "unix")
    monkeypatch.setattr(vsock, "new_vsock_socket", refuse)
    vsock.set_vsock_mode(None)
    yield
    vsock.set_vsock_mode(None)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = shared_root()
    if not (root / "nitro-vectors" / "manifest.json").is_file():
        message = f"shared test vectors not found at {root}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def vectors_dir(shared_dir: Path) -> Path:
    return shared_dir / "nitro-vectors"


@pytest.fixture(scope="session")
def manifest(vectors_dir: Path) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((vectors_dir / "manifest.json").read_text())
    return data
