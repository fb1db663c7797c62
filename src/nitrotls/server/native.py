"""Whether the serving hot path runs compiled, and the guard that never lets a stale build run.

The modules in :data:`COMPILED` are ordinary, type-checked Python that the build compiles with
mypyc (``setup.py``) into C extensions placed beside their sources. Python imports an
extension before a ``.py`` of the same name, so a build older than its sources would silently
run old code. The build therefore records each source's SHA-256 (``native-build.json``); at
import of ``nitrotls.server`` the sources are hashed again, and unless every one matches, the
interpreted sources are imported instead (same code, slower) and :data:`ENGINE` says why.
``NITROTLS_PURE_PYTHON=1`` asks for the interpreted sources at run time (and, at build time,
skips the compiling).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Final

# Compiled by setup.py (which reads this tuple). They may import any module, compiled or not;
# a class deriving from a C type cannot be compiled and lives elsewhere (see accepted.py).
COMPILED: Final = (
    "nitrotls.server.http1",
    "nitrotls.server.metrics",
    "nitrotls.server.tlsconn",
    "nitrotls.server.upstream",
    "nitrotls.server.proxy",
    "nitrotls.server.listener",
    "nitrotls.server.raw",
)
PURE_ENV: Final = "NITROTLS_PURE_PYTHON"
BUILD_RECORD: Final = Path(__file__).with_name("native-build.json")
_HERE: Final = Path(__file__).parent


@dataclass(frozen=True)
class Engine:
    """How the hot path runs in this process, and why (``nitrotls serve`` logs it at start)."""

    compiled: bool
    reason: str
    degraded: bool = False  # a build exists but cannot be used (stale, partial, no record)

    def describe(self) -> str:
        return f"hot path {'compiled' if self.compiled else 'interpreted'}: {self.reason}"


def source_of(module: str) -> Path:
    """The ``.py`` file of one of this package's modules."""
    return _HERE / (module.rpartition(".")[2] + ".py")


def source_digest(path: Path) -> str:
    """What the build records for ``path``: SHA-256 of its bytes, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _extension_of(module: str) -> Path | None:
    leaf = module.rpartition(".")[2]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = _HERE / (leaf + suffix)
        if candidate.is_file():
            return candidate
    return None


def choose(modules: Sequence[str] = COMPILED, record_path: Path = BUILD_RECORD) -> Engine:
    """Compiled only when asked for, built, and built from exactly the sources beside it."""
    if os.environ.get(PURE_ENV):
        return Engine(False, f"{PURE_ENV} is set")
    missing = [m for m in modules if _extension_of(m) is None]
    if len(missing) == len(modules):
        return Engine(False, f"not compiled (built with {PURE_ENV}=1 or from a source tree)")
    if missing:
        return Engine(False, f"partly compiled: no extension for {', '.join(missing)}", True)
    try:
        record = json.loads(record_path.read_text())
        recorded = record["sources"]
        compiler = str(record["compiler"])
    except (OSError, ValueError, KeyError, TypeError):
        return Engine(False, f"no readable build record ({record_path.name}): rebuild", True)
    for module in modules:
        if recorded.get(module) != source_digest(source_of(module)):
            changed = source_of(module).name
            return Engine(False, f"{changed} changed since it was compiled: rebuild (make)", True)
    return Engine(True, f"compiled with {compiler}")


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Finds the interpreted source of the compiled modules, ahead of their extensions."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = frozenset(modules)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, source_of(fullname))


def activate() -> Engine:
    """Decide once per process, before any of :data:`COMPILED` is imported. Whenever the build
    is not used the sources go first (without extensions they are found that way anyway)."""
    engine = choose()
    if not engine.compiled:
        sys.meta_path.insert(0, _SourcesFirst(COMPILED))
    return engine
