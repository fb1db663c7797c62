"""Build hook: compile the server's hot path with mypyc (the list is in server/native.py).

Everything else about the package is in pyproject.toml. ``NITROTLS_PURE_PYTHON=1`` skips the
compiling (no C compiler or Python headers needed; the server then runs interpreted, same code).
The build records each compiled source's SHA-256 in ``native-build.json`` so that a build older
than its sources is never imported (see ``nitrotls.server.native``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

SERVER = Path("src", "nitrotls", "server")
RECORD = SERVER / "native-build.json"


def compiled_modules() -> tuple[str, ...]:
    """``COMPILED`` from server/native.py, read without importing the package."""
    tree = ast.parse((SERVER / "native.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "COMPILED":
            assert node.value is not None
            return tuple(ast.literal_eval(node.value))
    raise RuntimeError("COMPILED not found in src/nitrotls/server/native.py")


def source(module: str) -> Path:
    return Path("src", *module.split(".")).with_suffix(".py")


def write_record(modules: tuple[str, ...], compiler: str) -> None:
    sources = {m: hashlib.sha256(source(m).read_bytes()).hexdigest() for m in modules}
    temporary = RECORD.with_suffix(".tmp")
    temporary.write_text(json.dumps({"compiler": compiler, "sources": sources}, indent=1))
    temporary.replace(RECORD)


def cannot_compile() -> str | None:
    """Why no C extension can be built here (no compiler, no Python headers), or None."""
    compiler = os.environ.get("CC", "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler!r}; on Debian: apt-get install gcc)"
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if not headers.is_file():
        return f"no Python headers ({headers}; on Debian: apt-get install python3-dev)"
    return None


def ext_modules() -> list[object]:
    RECORD.unlink(missing_ok=True)
    if os.environ.get("NITROTLS_PURE_PYTHON"):
        return []
    reason = cannot_compile()
    if reason is not None:  # installs, and serves interpreted (serve's start-up log says so)
        print(f"nitrotls: not compiling the server's hot path: {reason}", file=sys.stderr)
        return []
    from mypy.version import __version__ as mypy_version
    from mypyc.build import mypycify

    modules = compiled_modules()
    extensions = mypycify(
        [str(source(m)) for m in modules], opt_level="3", group_name="nitrotls_native"
    )
    write_record(modules, f"mypyc {mypy_version}")
    return list(extensions)


setup(ext_modules=ext_modules())
