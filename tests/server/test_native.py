"""The compiled hot path: it runs when built from the sources beside it, and never otherwise."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nitrotls.server as server
from nitrotls.server import native

from system_tools import IN_CI

SRC = Path(native.__file__).resolve().parents[2]  # the directory holding the nitrotls package
BUILT = all(native._extension_of(m) is not None for m in native.COMPILED)
PURE_RUN = bool(os.environ.get(native.PURE_ENV))
needs_build = pytest.mark.skipif(
    not BUILT and not IN_CI, reason="hot path not compiled here (built with NITROTLS_PURE_PYTHON=1)"
)


def test_this_run_imports_what_it_asked_for() -> None:
    """What ships is what is tested: make test builds the extensions and its main run imports
    them; its second run of tests/server (NITROTLS_PURE_PYTHON=1) imports the sources."""
    modules = [importlib.import_module(name) for name in native.COMPILED]
    if PURE_RUN:
        assert not server.ENGINE.compiled
        assert all(Path(m.__file__ or "").suffix == ".py" for m in modules)
        return
    if not BUILT and not IN_CI:
        pytest.skip("hot path not compiled here (built with NITROTLS_PURE_PYTHON=1)")
    assert server.ENGINE.compiled, server.ENGINE.reason
    assert all(Path(m.__file__ or "").suffix == ".so" for m in modules)


def _record(tmp_path: Path, **changes: str) -> Path:
    sources = {m: native.source_digest(native.source_of(m)) for m in native.COMPILED}
    sources.update(changes)
    path = tmp_path / "native-build.json"
    path.write_text(json.dumps({"compiler": "mypyc test", "sources": sources}))
    return path


@needs_build
def test_matching_record_chooses_compiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    assert native.choose(record_path=_record(tmp_path)) == native.Engine(
        True, "compiled with mypyc test"
    )


@needs_build
@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("digest", "proxy.py changed since it was compiled"),
        ("missing", "no readable build record"),
        ("garbage", "no readable build record"),
        ("no-sources", "no readable build record"),
    ],
)
def test_stale_or_unreadable_record_chooses_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: str, reason: str
) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    path = _record(tmp_path, **{"nitrotls.server.proxy": "0" * 64})
    if record == "missing":
        path.unlink()
    elif record == "garbage":
        path.write_bytes(b"\xff{")
    elif record == "no-sources":
        path.write_text(json.dumps({"compiler": "x"}))
    engine = native.choose(record_path=path)
    assert not engine.compiled
    assert engine.degraded  # serve warns: a build exists that is not used
    assert reason in engine.reason


def test_environment_asks_for_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.PURE_ENV, "1")
    assert native.choose() == native.Engine(False, "NITROTLS_PURE_PYTHON is set")


def test_no_extensions_means_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    engine = native.choose(modules=("nitrotls.server.not_a_module",))
    assert not engine.compiled
    assert not engine.degraded
    assert "not compiled" in engine.reason


_PROBE = (
    "import nitrotls.server as s, nitrotls.server.proxy as p, nitrotls.server.tlsconn as t;"
    "print(s.ENGINE.compiled, p.__file__.endswith('.py'), t.__file__.endswith('.py'))"
)


def _probe(root: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    env["PYTHONPATH"] = str(root)
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(root)!r}); {_PROBE}"],
        capture_output=True, text=True, env=env, timeout=60, check=True, cwd=root,
    )  # fmt: skip
    return done.stdout.strip()


@needs_build
def test_edited_source_is_imported_instead_of_its_stale_extension(tmp_path: Path) -> None:
    """End to end in a fresh interpreter, on a copy of the built package: edit one compiled
    module's source and every compiled module comes from source (no mix of old and new)."""
    root = tmp_path / "site"
    shutil.copytree(SRC / "nitrotls", root / "nitrotls", ignore=shutil.ignore_patterns("*.pyc"))
    for group in SRC.glob("nitrotls_native__mypyc*"):
        shutil.copy2(group, root / group.name)
    assert _probe(root) == "True False False"  # the copy as built: compiled
    proxy = root / "nitrotls" / "server" / "proxy.py"
    proxy.write_text(proxy.read_text() + "\n# edited after the build\n")
    assert _probe(root) == "False True True"
