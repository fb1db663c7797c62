"""What the DirectoryStore tests run in child processes.

A module of its own, importable as ``store.store_children``, because the children are spawned:
each is a fresh interpreter that imports its target by name.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path
from typing import Any

from nitrotls.store import DirectoryStore, LeaseHeldError
from nitrotls.store import files as store_files
from store.store_support import race_once


def crash_at(root: Path, final_name: str, call: str) -> None:
    """Child: die (no cleanup, no finally) the moment ``final_name`` would be renamed in."""
    original = store_files.publish

    def publish(temp: Path, final: Path, *, exclusive: bool) -> None:
        if final.name == final_name:
            os._exit(17)
        original(temp, final, exclusive=exclusive)

    store_files.publish = publish
    store = DirectoryStore(root)
    if call == "put":
        store.put("web", "id-2", b"new" * 1000, expected_previous="id-1")
    elif call == "object":
        store.put_object("acct", b"new account")


def sealed(payload: bytes) -> bytes:
    """The payload behind its SHA-256: a reader can tell a whole bundle from a torn one."""
    return hashlib.sha256(payload).digest() + payload


def write_forever(root: Path) -> None:
    store = DirectoryStore(root)
    rng = random.Random(os.getpid())
    previous = store.latest("web")
    expected = previous.id if previous else None
    counter = 0
    while True:
        counter += 1
        bundle_id = f"p{os.getpid()}-{counter}"
        store.put("web", bundle_id, sealed(rng.randbytes(256 * 1024)), expected_previous=expected)
        expected = bundle_id


def race(root: str, index: int, rounds: int, barrier: Any, queue: Any) -> None:
    store = DirectoryStore(root)
    for round_no in range(rounds):
        bundle_id = f"r{round_no}-p{index}"
        if race_once(store, bundle_id, lambda: barrier.wait(timeout=60)):
            queue.put((round_no, bundle_id))
        barrier.wait(timeout=60)


def take_lease_turns(root: str, index: int, log_path: str, attempts: int) -> None:
    store = DirectoryStore(root)
    for _ in range(attempts):
        try:
            lease = store.acquire_lease("hot", f"proc-{index}", 60)
        except LeaseHeldError:
            time.sleep(0.001)
            continue
        with open(log_path, "a") as log:
            log.write(f"in {index}\n")
        time.sleep(0.003)
        with open(log_path, "a") as log:
            log.write(f"out {index}\n")
        store.release_lease(lease)


def hold_lease_and_die(root: Path) -> None:
    """Take the lease and exit without releasing it."""
    DirectoryStore(root).acquire_lease("web", "doomed", 0.3)
    os._exit(0)
