"""The BundleStore contract, run against every backend (directory and S3 on moto)."""

from __future__ import annotations

import threading
import time

import pytest

from nitrotls.store import (
    BundleExistsError,
    BundleNotFoundError,
    BundleStore,
    InvalidLeaseError,
    InvalidStoreNameError,
    Latest,
    LeaseHeldError,
    LeaseLostError,
    StoreConflictError,
    StoreTooLargeError,
)
from nitrotls.store.base import MAX_BUNDLE_BYTES, MAX_OBJECT_BYTES
from store.store_support import FakeClock, one_winner_per_round


def test_empty_store(store: BundleStore) -> None:
    assert store.latest("web") is None
    assert store.list("web") == []
    assert store.names() == []
    with pytest.raises(BundleNotFoundError):
        store.get("web", "abc")


def test_put_then_latest_get_list_names(store: BundleStore) -> None:
    store.put("web", "id-1", b"first", expected_previous=None)
    assert store.latest("web") == Latest("id-1", b"first")
    store.put("web", "id-2", b"second", expected_previous="id-1")
    latest = store.latest("web")
    assert latest is not None
    bundle_id, data = latest
    assert (bundle_id, data) == ("id-2", b"second")
    assert store.get("web", "id-1") == b"first"
    assert store.list("web") == ["id-1", "id-2"]
    store.put("api.example.com", "x", b"other", expected_previous=None)
    assert store.names() == ["api.example.com", "web"]
    assert store.latest("api.example.com") == Latest("x", b"other")


def test_stale_expected_previous_is_a_conflict(store: BundleStore) -> None:
    store.put("web", "id-1", b"one", expected_previous=None)
    with pytest.raises(StoreConflictError, match="id-1"):
        store.put("web", "id-2", b"two", expected_previous=None)
    store.put("web", "id-2", b"two", expected_previous="id-1")
    with pytest.raises(StoreConflictError):
        store.put("web", "id-3", b"three", expected_previous="id-1")
    assert store.latest("web") == Latest("id-2", b"two")


def test_bundle_ids_are_never_reused(store: BundleStore) -> None:
    store.put("web", "id-1", b"one", expected_previous=None)
    with pytest.raises(BundleExistsError):
        store.put("web", "id-1", b"forged", expected_previous="id-1")
    assert store.get("web", "id-1") == b"one"
    assert store.latest("web") == Latest("id-1", b"one")


def test_bundle_bytes_are_opaque(store: BundleStore) -> None:
    blob = bytes(range(256)) * 64
    store.put("web", "bin", blob, expected_previous=None)
    assert store.get("web", "bin") == blob


def test_size_limits(store: BundleStore) -> None:
    with pytest.raises(StoreTooLargeError):
        store.put("web", "big", b"\0" * (MAX_BUNDLE_BYTES + 1), expected_previous=None)
    with pytest.raises(StoreTooLargeError):
        store.put_object("acct", b"\0" * (MAX_OBJECT_BYTES + 1))
    assert store.latest("web") is None


BAD_NAMES = [
    "../etc",
    "..",
    ".",
    ".hidden",
    "a/b",
    "a\\b",
    "/abs",
    "",
    "x" * 129,
    "name\n",
    "name\x00",
    "spa ce",
    "ünï",
    "-dash",
]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_path_traversal_and_odd_names_are_refused(store: BundleStore, bad: str) -> None:
    with pytest.raises(InvalidStoreNameError):
        store.put(bad, "id", b"x", expected_previous=None)
    with pytest.raises(InvalidStoreNameError):
        store.put("web", bad, b"x", expected_previous=None)
    with pytest.raises(InvalidStoreNameError):
        store.put("web", "id", b"x", expected_previous=bad)
    with pytest.raises(InvalidStoreNameError):
        store.latest(bad)
    with pytest.raises(InvalidStoreNameError):
        store.get("web", bad)
    with pytest.raises(InvalidStoreNameError):
        store.list(bad)
    with pytest.raises(InvalidStoreNameError):
        store.acquire_lease(bad, "me", 10)
    with pytest.raises(InvalidStoreNameError):
        store.put_object(bad, b"x")
    with pytest.raises(InvalidStoreNameError):
        store.get_object(bad)
    assert store.names() == []


@pytest.mark.parametrize("bad", ["../x", "a.b", "a/b", "", "t" * 257, "tok=="])
def test_challenge_tokens_are_base64url_only(store: BundleStore, bad: str) -> None:
    with pytest.raises(InvalidStoreNameError):
        store.put_challenge(bad, "x")
    with pytest.raises(InvalidStoreNameError):
        store.get_challenge(bad)


def test_challenges_round_trip(store: BundleStore) -> None:
    token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
    assert store.get_challenge(token) is None
    store.put_challenge(token, f"{token}.thumbprint")
    assert store.get_challenge(token) == f"{token}.thumbprint"
    store.delete_challenge(token)
    assert store.get_challenge(token) is None
    store.delete_challenge(token)  # idempotent
    with pytest.raises(InvalidStoreNameError):
        store.put_challenge(token, "non-ascii é")


def test_objects_round_trip_and_replace(store: BundleStore) -> None:
    assert store.get_object("acme-account") is None
    store.put_object("acme-account", b"sealed-1")
    store.put_object("acme-account", b"sealed-2")
    assert store.get_object("acme-account") == b"sealed-2"
    store.delete_object("acme-account")
    assert store.get_object("acme-account") is None
    store.delete_object("acme-account")


# -- leases -------------------------------------------------------------------------------------


def test_lease_is_exclusive_until_it_expires(store: BundleStore, clock: FakeClock) -> None:
    first = store.acquire_lease("web", "gen-a", 30)
    assert first.holder == "gen-a"
    assert first.expires_at == clock.now + 30
    with pytest.raises(LeaseHeldError, match="gen-a"):
        store.acquire_lease("web", "gen-b", 30)
    clock.now += 29.9
    with pytest.raises(LeaseHeldError):
        store.acquire_lease("web", "gen-b", 30)
    clock.now += 0.2  # gen-a crashed: its lease expired
    second = store.acquire_lease("web", "gen-b", 30)
    assert second.holder == "gen-b"
    assert second.token != first.token
    with pytest.raises(LeaseLostError):
        store.renew_lease(first, 30)
    store.release_lease(first)  # not ours any more: must not free gen-b's lease
    with pytest.raises(LeaseHeldError):
        store.acquire_lease("web", "gen-c", 30)


def test_lease_renew_and_release(store: BundleStore, clock: FakeClock) -> None:
    lease = store.acquire_lease("web", "gen-a", 10)
    clock.now += 8
    renewed = store.renew_lease(lease, 10)
    assert renewed.token == lease.token
    assert renewed.expires_at == clock.now + 10
    clock.now += 8  # past the first expiry, inside the renewed one
    with pytest.raises(LeaseHeldError):
        store.acquire_lease("web", "gen-b", 10)
    store.release_lease(renewed)
    taken = store.acquire_lease("web", "gen-b", 10)
    with pytest.raises(LeaseLostError):
        store.renew_lease(renewed, 10)
    store.release_lease(taken)


def test_same_holder_may_reacquire(store: BundleStore) -> None:
    first = store.acquire_lease("web", "gen-a", 10)
    again = store.acquire_lease("web", "gen-a", 10)
    assert again.token != first.token
    with pytest.raises(LeaseLostError):
        store.renew_lease(first, 10)


def test_lease_context_manager_releases_on_error(store: BundleStore) -> None:
    with pytest.raises(RuntimeError), store.lease("web", "gen-a", 60):
        with pytest.raises(LeaseHeldError):
            store.acquire_lease("web", "gen-b", 60)
        raise RuntimeError("issuance failed")
    with store.lease("web", "gen-b", 60) as held:
        assert held.holder == "gen-b"


def test_leases_are_per_name(store: BundleStore) -> None:
    store.acquire_lease("web", "gen-a", 60)
    other = store.acquire_lease("api", "gen-b", 60)
    assert other.name == "api"


def test_lease_arguments_are_checked(store: BundleStore) -> None:
    with pytest.raises(InvalidLeaseError):
        store.acquire_lease("web", "gen", 0)
    with pytest.raises(InvalidLeaseError):
        store.acquire_lease("web", "gen", -5)
    lease = store.acquire_lease("web", "gen", 5)
    with pytest.raises(InvalidLeaseError):
        store.renew_lease(lease, 10**9)
    with pytest.raises(InvalidStoreNameError):
        store.acquire_lease("web", "has space", 5)
    with pytest.raises(InvalidStoreNameError):
        store.acquire_lease("web", "", 5)


# -- concurrency --------------------------------------------------------------------------------


def test_concurrent_writers_exactly_one_wins_each_round(store: BundleStore) -> None:
    winners = one_winner_per_round(store, workers=4, rounds=8)
    assert all(len(round_winners) == 1 for round_winners in winners), winners
    latest = store.latest("race")
    assert latest is not None
    assert latest.id == winners[-1][0]
    assert latest.data == latest.id.encode()


def test_concurrent_lease_holders_never_overlap(store: BundleStore) -> None:
    inside = 0
    overlaps = 0
    entries = 0
    guard = threading.Lock()

    def worker(index: int) -> None:
        nonlocal inside, overlaps, entries
        for _ in range(15):
            try:
                lease = store.acquire_lease("hot", f"worker-{index}", 60)
            except LeaseHeldError:
                continue
            with guard:
                inside += 1
                entries += 1
                overlaps += inside > 1
            time.sleep(0.002)  # hold it a moment, so an overlap would be seen
            with guard:
                inside -= 1
            store.release_lease(lease)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert overlaps == 0
    assert entries > 0
