"""Shared helpers for store tests: a race harness whose rounds have exactly one true winner."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nitrotls.store import BundleStore, S3Store, StoreConflictError

S3_CREDENTIALS: dict[str, Any] = {
    "region": "us-east-1",
    "access_key_id": "testing",
    "secret_access_key": "testing",
}


def make_s3_store(
    endpoint: str, bucket: str, clock: Any = None, prefix: str = "env/prod"
) -> S3Store:
    extra = {"clock": clock} if clock is not None else {}
    return S3Store(bucket, prefix, endpoint_url=endpoint, **S3_CREDENTIALS, **extra)


@dataclass
class FakeClock:
    """Wall clock for leases, moved by hand so expiry tests never sleep."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def race_once(store: BundleStore, bundle_id: str, wait: Callable[[], object]) -> bool:
    """One round of a race on ``race``: read the latest id, ``wait`` for the other racers,
    then publish expecting that id. Whether this put won."""
    latest = store.latest("race")
    expected = latest.id if latest else None
    wait()
    try:
        store.put("race", bundle_id, bundle_id.encode(), expected_previous=expected)
    except StoreConflictError:
        return False
    return True


def one_winner_per_round(store: BundleStore, *, workers: int, rounds: int) -> list[list[str]]:
    """Each round, every worker reads the same latest, then all try to publish at once.

    Returns, per round, the ids whose ``put`` succeeded (the contract says: exactly one).
    """
    start, done = threading.Barrier(workers), threading.Barrier(workers)
    results: list[list[str]] = [[] for _ in range(rounds)]
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        try:
            for round_no in range(rounds):
                bundle_id = f"r{round_no}-w{index}"
                if race_once(store, bundle_id, lambda: start.wait(timeout=30)):
                    with lock:
                        results[round_no].append(bundle_id)
                done.wait(timeout=30)
        except BaseException as error:  # surfaced to the test below
            errors.append(error)
            start.abort()
            done.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results
