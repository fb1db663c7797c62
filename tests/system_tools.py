"""Where the tests find the shared vectors and the system tools they drive."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI") == "true"


def shared_root() -> Path:
    """``../shared`` beside the checkout (or ``$NITROTLS_SHARED``)."""
    return Path(os.environ.get("NITROTLS_SHARED", REPO.parent / "shared"))


def require_tool(name: str) -> str:
    """Path of a system tool; skip when missing outside CI, fail when missing under CI."""
    found = shutil.which(name)
    if found:
        return found
    message = f"system tool {name!r} is not installed (make test installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)
