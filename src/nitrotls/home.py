"""Where nitrotls keeps its state: one data directory for everything.

Order of precedence: an explicit path (the CLI's ``--home``), then ``$NITROTLS_HOME``, then the
platform's user data directory. Every other module asks this one, so tests can point the whole
system at a temporary directory with a single environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

ENV_VAR = "NITROTLS_HOME"
_override: Path | None = None


def set_home(path: Path | str | None) -> None:
    """Pin the data directory for this process (used by ``--home``)."""
    global _override
    _override = Path(path).expanduser().resolve() if path is not None else None


def data_dir(create: bool = True) -> Path:
    """Return the data directory, creating it private (0700) when asked."""
    if _override is not None:
        path = _override
    elif os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR]).expanduser().resolve()
    else:
        path = Path(platformdirs.user_data_dir("nitrotls", appauthor=False))
    if create:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def sub_dir(*parts: str) -> Path:
    """A private directory below the data directory."""
    path = data_dir().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
