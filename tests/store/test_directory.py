"""DirectoryStore specifics: crashes mid-write, real processes racing, corruption, permissions."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from nitrotls.store import (
    DirectoryStore,
    Latest,
    LeaseHeldError,
    StoreCorruptError,
    StoreSpecError,
    StoreTooLargeError,
    StoreUnavailableError,
    open_store,
)
from nitrotls.store import files as store_files
from nitrotls.store.base import MAX_BUNDLE_BYTES
from store.store_children import (
    crash_at,
    hold_lease_and_die,
    race,
    take_lease_turns,
    write_forever,
)

# Children are fresh interpreters (spawned): forking this multi-threaded test process could copy a
# lock another thread holds. Their code is in store.store_children, which they can import.
CHILDREN = multiprocessing.get_context("spawn")


def _run_child(target: Any, *args: Any) -> int:
    process = CHILDREN.Process(target=target, args=args)
    process.start()
    process.join(timeout=60)
    assert process.exitcode is not None
    return process.exitcode


@pytest.mark.parametrize("crash_point", ["id-2", "latest"])
def test_crash_between_write_and_rename_keeps_the_old_latest(
    tmp_path: Path, crash_point: str
) -> None:
    root = tmp_path / "store"
    store = DirectoryStore(root)
    store.put("web", "id-1", b"old" * 1000, expected_previous=None)
    assert _run_child(crash_at, root, crash_point, "put") == 17
    assert store.latest("web") == Latest("id-1", b"old" * 1000)
    leftovers = [p for p in (root / "bundles" / "web").rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers, "the crashed writer should have left its temporary file behind"
    assert all(not p.name.startswith(".tmp-") for p in map(Path, store.list("web")))
    if crash_point == "id-2":
        assert store.list("web") == ["id-1"]  # the half-written object is not visible
    else:
        assert store.get("web", "id-2") == b"new" * 1000  # complete, but never made latest
    store.put("web", "id-3", b"next", expected_previous="id-1")  # the store still works
    assert store.latest("web") == Latest("id-3", b"next")


def test_crash_while_replacing_an_object_keeps_the_old_one(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = DirectoryStore(root)
    store.put_object("acct", b"old account")
    assert _run_child(crash_at, root, "acct", "object") == 17
    assert store.get_object("acct") == b"old account"


@pytest.mark.slow
def test_sigkill_at_random_moments_never_exposes_half_a_bundle(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = DirectoryStore(root)
    rng = random.Random(1234)
    for _ in range(6):
        process = CHILDREN.Process(target=write_forever, args=(root,))
        process.start()
        deadline = time.monotonic() + 30
        while store.latest("web") is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=30)
        latest = store.latest("web")
        assert latest is not None
        digest, payload = latest.data[:32], latest.data[32:]
        assert hashlib.sha256(payload).digest() == digest
        for bundle_id in store.list("web"):
            data = store.get("web", bundle_id)
            assert hashlib.sha256(data[32:]).digest() == data[:32], bundle_id


@pytest.mark.slow
def test_processes_racing_exactly_one_wins_each_round(tmp_path: Path) -> None:
    workers, rounds = 3, 6
    barrier = CHILDREN.Barrier(workers)
    queue = CHILDREN.Queue()
    processes = [
        CHILDREN.Process(target=race, args=(str(tmp_path), i, rounds, barrier, queue))
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    wins: dict[int, list[str]] = {}
    while not queue.empty():
        round_no, bundle_id = queue.get(timeout=5)
        wins.setdefault(round_no, []).append(bundle_id)
    assert sorted(wins) == list(range(rounds))
    assert all(len(ids) == 1 for ids in wins.values()), wins
    latest = DirectoryStore(tmp_path).latest("race")
    assert latest is not None and latest.id == wins[rounds - 1][0]


@pytest.mark.slow
def test_processes_never_hold_a_lease_together(tmp_path: Path) -> None:
    log_path = tmp_path / "log"
    processes = [
        CHILDREN.Process(target=take_lease_turns, args=(str(tmp_path / "s"), i, str(log_path), 40))
        for i in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    lines = log_path.read_text().splitlines()
    assert lines, "no process ever got the lease"
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):
        assert enter.startswith("in ") and leave == "out " + enter[3:], lines


def test_a_crashed_holders_lease_expires(tmp_path: Path) -> None:
    """A holder that dies without releasing blocks others only until the ttl runs out."""
    root = tmp_path / "store"
    assert _run_child(hold_lease_and_die, root) == 0
    store = DirectoryStore(root)
    with pytest.raises(LeaseHeldError, match="doomed"):
        store.acquire_lease("web", "next", 10)
    deadline = time.monotonic() + 10
    while True:
        try:
            lease = store.acquire_lease("web", "next", 10)
            break
        except LeaseHeldError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert lease.holder == "next"


def test_dangling_pointer_is_corruption(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    store.put("web", "id-1", b"x", expected_previous=None)
    (tmp_path / "bundles" / "web" / "objects" / "id-1").unlink()
    with pytest.raises(StoreCorruptError, match="missing"):
        store.latest("web")


@pytest.mark.parametrize("content", [b"../../etc/passwd\n", b"\xff\xfe", b"", b"a b"])
def test_garbled_pointer_is_corruption(tmp_path: Path, content: bytes) -> None:
    store = DirectoryStore(tmp_path)
    store.put("web", "id-1", b"x", expected_previous=None)
    (tmp_path / "bundles" / "web" / "latest").write_bytes(content)
    with pytest.raises(StoreCorruptError):
        store.latest("web")
    with pytest.raises(StoreCorruptError):
        store.put("web", "id-2", b"y", expected_previous="id-1")


@pytest.mark.parametrize(
    "content", [b"not json", b"{}", b'{"holder": 1, "token": "t", "expires_at": 1}']
)
def test_garbled_lease_is_corruption_not_a_free_lease(tmp_path: Path, content: bytes) -> None:
    store = DirectoryStore(tmp_path)
    store.acquire_lease("web", "a", 10)
    (tmp_path / "leases" / "web").write_bytes(content)
    with pytest.raises(StoreCorruptError):
        store.acquire_lease("web", "b", 10)


def test_oversized_file_on_disk_is_refused_on_read(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    store.put("web", "id-1", b"x", expected_previous=None)
    with (tmp_path / "bundles" / "web" / "objects" / "id-1").open("wb") as handle:
        handle.truncate(MAX_BUNDLE_BYTES + 1)
    with pytest.raises(StoreTooLargeError):
        store.latest("web")


def test_symlinked_object_is_not_followed(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "s")
    store.put("web", "id-1", b"x", expected_previous=None)
    secret = tmp_path / "secret"
    secret.write_bytes(b"do not serve")
    target = tmp_path / "s" / "bundles" / "web" / "objects" / "id-2"
    target.symlink_to(secret)
    with pytest.raises(StoreUnavailableError):
        store.get("web", "id-2")


def test_objects_are_private_and_default_root_is_in_the_data_dir(nitrotls_home: Path) -> None:
    store = DirectoryStore()
    assert store.root == nitrotls_home / "store"
    store.put_object("acct", b"sealed")
    mode = stat.S_IMODE((store.root / "objects" / "acct").stat().st_mode)
    assert mode == 0o600


def test_stuck_lock_holder_gives_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    store = DirectoryStore(tmp_path)
    store.put("web", "id-1", b"x", expected_previous=None)
    monkeypatch.setattr(store_files, "LOCK_TIMEOUT", 0.2)
    lock = os.open(tmp_path / "bundles" / "web" / ".lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a peer stuck while holding the lock
        with pytest.raises(StoreUnavailableError, match="stuck"):
            store.put("web", "id-2", b"y", expected_previous="id-1")
    finally:
        os.close(lock)
    store.put("web", "id-2", b"y", expected_previous="id-1")


def test_store_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreUnavailableError):
        DirectoryStore(tmp_path / "file")


# -- readers (read_only=True): never create, never write ------------------------------------


def _reads(store: DirectoryStore) -> list[Any]:
    return [
        lambda: store.latest("web"),
        lambda: store.get("web", "id-1"),
        lambda: store.list("web"),
        store.names,
        lambda: store.get_challenge("tok"),
        lambda: store.get_object("acct"),
    ]


def _writes(store: DirectoryStore) -> list[Any]:
    return [
        lambda: store.put("web", "id-9", b"x", expected_previous=None),
        lambda: store.acquire_lease("web", "me", 10),
        lambda: store.put_challenge("tok", "value"),
        lambda: store.delete_challenge("tok"),
        lambda: store.put_object("acct", b"x"),
        lambda: store.delete_object("acct"),
    ]


def test_reader_of_a_missing_store_creates_nothing_and_reports_an_outage(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "store"
    reader = open_store(f"dir:{root}", read_only=True)
    assert isinstance(reader, DirectoryStore)
    for read in _reads(reader):
        with pytest.raises(StoreUnavailableError, match="does not exist") as caught:
            read()
        assert str(root) in str(caught.value)
    for write in _writes(reader):
        with pytest.raises(StoreUnavailableError, match="read-only"):
            write()
    assert not (tmp_path / "a").exists()


def test_reader_sees_the_store_once_the_writer_creates_it(tmp_path: Path) -> None:
    root = tmp_path / "store"
    reader = DirectoryStore(root, read_only=True)
    with pytest.raises(StoreUnavailableError):
        reader.latest("web")
    writer = open_store(f"dir:{root}")  # writers still create the tree
    assert root.is_dir()
    assert reader.latest("web") is None and reader.names() == []  # now: empty, not missing
    writer.put("web", "id-1", b"bundle", expected_previous=None)
    assert reader.latest("web") == Latest("id-1", b"bundle")
    assert reader.list("web") == ["id-1"] and reader.names() == ["web"]
    before = sorted(str(p) for p in root.rglob("*"))
    for write in _writes(reader):
        with pytest.raises(StoreUnavailableError, match="read-only"):
            write()
    assert sorted(str(p) for p in root.rglob("*")) == before
    assert reader.latest("web") == Latest("id-1", b"bundle")


def test_reader_default_store_is_not_created(nitrotls_home: Path) -> None:
    reader = open_store(None, read_only=True)
    assert isinstance(reader, DirectoryStore) and reader.root == nitrotls_home / "store"
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        reader.latest("web")
    assert not (nitrotls_home / "store").exists()


def test_reader_refuses_a_path_that_cannot_be_a_directory(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(StoreSpecError, match="is a regular file, not a directory") as caught:
        DirectoryStore(plain, read_only=True)
    assert caught.value.exit_code == 2
    with pytest.raises(StoreSpecError, match=f"{plain} is not a directory"):
        open_store(f"dir:{plain}/deeper/store", read_only=True)
    assert plain.read_text() == "x"
