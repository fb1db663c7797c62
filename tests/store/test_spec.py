"""open_store: spec strings name stores the same way everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from nitrotls.store import DirectoryStore, StoreSpecError, open_store


def test_default_is_the_data_directory(nitrotls_home: Path) -> None:
    for spec in (None, "", "  "):
        store = open_store(spec)
        assert isinstance(store, DirectoryStore)
        assert store.root == nitrotls_home / "store"


def test_dir_prefix_and_bare_path(tmp_path: Path) -> None:
    prefixed = open_store(f"dir:{tmp_path / 'a'}")
    bare = open_store(str(tmp_path / "b"))
    assert isinstance(prefixed, DirectoryStore) and prefixed.root == tmp_path / "a"
    assert isinstance(bare, DirectoryStore) and bare.root == tmp_path / "b"
    prefixed.put("web", "id", b"x", expected_previous=None)
    assert open_store(f"dir:{tmp_path / 'a'}").get("web", "id") == b"x"


@pytest.mark.parametrize("spec", ["dir:", "http://example.com/x", "gs://bucket/x"])
def test_unknown_or_empty_specs_are_refused(spec: str) -> None:
    with pytest.raises(StoreSpecError):
        open_store(spec)
