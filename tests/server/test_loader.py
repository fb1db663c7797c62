"""Loading bundles: verify, KMS, open, serve; outages, tampering, rollback and hot reload."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from nitrotls.attestation import Policy
from nitrotls.bundle import (
    WrappedDataKey,
    bind,
    build,
    encryption_context,
    new_bundle_id,
    seal_key,
)
from nitrotls.bundle.chain import leaf_spki
from nitrotls.kms.errors import KMSAccessDeniedError, KMSRequestError, KMSUnavailableError
from nitrotls.nsm import SimulatedNSM, measure_image, trusted_verifier
from nitrotls.secrets import SecretBuffer
from nitrotls.server.errors import (
    BundleRejectedError,
    KeyReleaseRefusedError,
    ServerConfigError,
    StartupUnavailableError,
)
from nitrotls.server.identity import ContextHolder
from nitrotls.server.loader import (
    BundleLoader,
    BundleSource,
    Reloader,
    Retry,
    load_at_start,
)
from nitrotls.server.metrics import Metrics
from nitrotls.store import DirectoryStore, StoreUnavailableError

from .conftest import PKI, Issued, open_tls, port_of, read_response, running, upstream_server
from .test_proxy import options
from .test_tls import find_key

NAME = "localhost"


@dataclass
class FakeKMS:
    """Remembers data keys by blob and context; can be switched off to model an outage."""

    keys: dict[bytes, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    decrypts: int = 0
    down: int = 0  # fail this many calls with KMSUnavailableError
    rejects: int = 0  # answer this many calls with a request error retrying cannot mend

    def generate(self, context: Mapping[str, str]) -> tuple[SecretBuffer, bytes]:
        blob, plain = os.urandom(64), os.urandom(32)
        self.keys[blob] = (plain, dict(context))
        return SecretBuffer(bytearray(plain)), blob

    def decrypt(
        self, blob: bytes, context: Mapping[str, str], source: object, key_id: str | None = None
    ) -> SecretBuffer:
        self.decrypts += 1
        if self.down:
            self.down -= 1
            raise KMSUnavailableError("fake KMS is down")
        if self.rejects:
            self.rejects -= 1
            raise KMSRequestError(
                "fake KMS: InvalidCiphertextException", "InvalidCiphertextException"
            )
        entry = self.keys.get(bytes(blob))
        if entry is None or entry[1] != dict(context):
            raise KMSAccessDeniedError("fake KMS: unknown blob or context")
        return SecretBuffer(bytearray(entry[0]))


class FlakyStore(DirectoryStore):
    """A directory store that is unreachable for the next ``down`` reads."""

    down = 0

    def latest(self, name: str):  # type: ignore[no-untyped-def]
        if self.down:
            self.down -= 1
            raise StoreUnavailableError("store is down (test)")
        return super().latest(name)


@dataclass
class Publisher:
    """A test generator: issues a leaf, seals its key, binds and publishes the bundle."""

    pki: PKI
    generator: SimulatedNSM
    store: FlakyStore
    kms: FakeKMS
    seq: int = 0
    previous: str | None = None
    keys: list[bytes] = field(default_factory=list)

    def publish(self, *, seq: int | None = None, tamper: bool = False) -> Issued:
        issued = self.pki.issue((NAME,))
        self.keys.append(bytes(issued.key))
        public = leaf_spki(issued.chain)
        bundle_id = new_bundle_id()
        data_key, blob = self.kms.generate(encryption_context(bundle_id, NAME, public))
        with data_key:
            sealed = seal_key(
                bytearray(issued.key), data_key, bundle_id=bundle_id, name=NAME, spki_der=public
            )
        self.seq = seq if seq is not None else self.seq + 1
        bundle = build(
            bundle_id=bundle_id,
            seq=self.seq,
            name=NAME,
            chain=issued.chain,
            key=sealed,
            dek=WrappedDataKey("alias/test", blob, encryption_context(bundle_id, NAME, public)),
        )
        raw = bind(bundle, self.generator).encode()
        if tamper:
            index = raw.index(issued.leaf[40:60])
            raw = raw[:index] + bytes([raw[index] ^ 1]) + raw[index + 1 :]
        self.store.put(NAME, bundle_id.hex(), raw, expected_previous=self.previous)
        self.previous = bundle_id.hex()
        return issued


@pytest.fixture
def world(pki: PKI, tmp_path: Path) -> tuple[Publisher, BundleSource]:
    generator_image = tmp_path / "gen"
    generator_image.mkdir()
    (generator_image / "gen.py").write_text("generator\n")
    main_image = tmp_path / "main"
    main_image.mkdir()
    (main_image / "main.py").write_text("main\n")
    store = FlakyStore(tmp_path / "store")
    kms = FakeKMS()
    publisher = Publisher(pki, SimulatedNSM(generator_image), store, kms)
    source = BundleSource(
        store=store,
        name=NAME,
        verifier=trusted_verifier(True),
        generator_policy=Policy(accepted_pcrs=(measure_image(generator_image),)),
        kms=kms,
        enclave=SimulatedNSM(main_image),
    )
    return publisher, source


def test_loads_newest_bundle(world: tuple[Publisher, BundleSource]) -> None:
    publisher, source = world
    publisher.publish()
    issued = publisher.publish()
    metrics = Metrics()
    served = load_at_start(BundleLoader(source, metrics), Retry(attempts=1))
    assert served.identity.leaf == issued.leaf
    assert served.identity.seq == 2
    assert served.identity.name == NAME
    assert len(served.identity.bundle_id) == 16


def test_no_key_left_in_python_objects_after_loading(
    world: tuple[Publisher, BundleSource],
) -> None:
    publisher, source = world
    publisher.publish()
    secret = publisher.keys[-1]
    publisher.keys.clear()
    served = load_at_start(BundleLoader(source, Metrics()), Retry(attempts=1))
    gc.collect()
    assert find_key(secret, [served]) == []


def test_tampered_bundle_refused_before_kms(world: tuple[Publisher, BundleSource]) -> None:
    publisher, source = world
    publisher.publish(tamper=True)
    with pytest.raises(BundleRejectedError) as caught:
        load_at_start(BundleLoader(source, Metrics()), Retry(attempts=1))
    assert caught.value.exit_code == 65
    assert publisher.kms.decrypts == 0


def test_debug_generator_refused(world: tuple[Publisher, BundleSource], tmp_path: Path) -> None:
    publisher, source = world
    debug_image = tmp_path / "gen"  # same image, debug mode: PCR0-2 zero
    publisher.generator = SimulatedNSM(debug_image, debug=True)
    publisher.publish()
    with pytest.raises(BundleRejectedError):
        load_at_start(BundleLoader(source, Metrics()), Retry(attempts=1))


def test_bundle_below_min_seq_refused(world: tuple[Publisher, BundleSource]) -> None:
    publisher, source = world
    publisher.publish(seq=3)
    with pytest.raises(BundleRejectedError, match="seq"):
        load_at_start(BundleLoader(source, Metrics(), min_seq=4), Retry(attempts=1))


def test_outage_at_start_retried_then_served(world: tuple[Publisher, BundleSource]) -> None:
    publisher, source = world
    publisher.publish()
    publisher.store.down = 2
    publisher.kms.down = 1
    slept: list[float] = []
    metrics = Metrics()
    served = load_at_start(
        BundleLoader(source, metrics), Retry(attempts=5, initial=0.5), sleep=slept.append
    )
    assert served.identity.seq == 1
    assert slept == [0.5, 1.0, 2.0]
    assert (metrics.store_errors, metrics.kms_errors) == (2, 1)


def test_outage_at_start_gives_up_with_distinct_exit_code(
    world: tuple[Publisher, BundleSource],
) -> None:
    publisher, source = world
    publisher.publish()
    publisher.kms.down = 10
    with pytest.raises(StartupUnavailableError, match="3 attempts") as caught:
        load_at_start(BundleLoader(source, Metrics()), Retry(attempts=3), sleep=lambda _s: None)
    assert caught.value.exit_code == 75


def test_missing_store_directory_is_retried_until_the_generator_creates_it(
    world: tuple[Publisher, BundleSource], tmp_path: Path
) -> None:
    publisher, source = world
    root = tmp_path / "late" / "store"
    reader = replace(source, store=DirectoryStore(root, read_only=True))
    slept: list[float] = []

    def generator_arrives(delay: float) -> None:
        slept.append(delay)
        if len(slept) == 2:  # the generator publishes its first bundle (creating the store)
            publisher.store = FlakyStore(root)
            publisher.publish()

    served = load_at_start(
        BundleLoader(reader, Metrics()), Retry(attempts=4, initial=0.5), sleep=generator_arrives
    )
    assert served.identity.seq == 1 and slept == [0.5, 1.0]


def test_missing_store_directory_gives_up_with_exit_75_naming_it(
    world: tuple[Publisher, BundleSource], tmp_path: Path
) -> None:
    _publisher, source = world
    root = tmp_path / "never" / "store"
    reader = replace(source, store=DirectoryStore(root, read_only=True))
    with pytest.raises(StartupUnavailableError, match="does not exist") as caught:
        load_at_start(BundleLoader(reader, Metrics()), Retry(attempts=2), sleep=lambda _s: None)
    assert caught.value.exit_code == 75 and str(root) in str(caught.value)
    assert not (tmp_path / "never").exists()


def test_access_denied_is_not_retried(world: tuple[Publisher, BundleSource]) -> None:
    publisher, source = world
    publisher.publish()
    publisher.kms.keys.clear()  # KMS no longer knows the blob: access denied
    slept: list[float] = []
    with pytest.raises(KeyReleaseRefusedError, match="unknown blob or context") as caught:
        load_at_start(BundleLoader(source, Metrics()), Retry(attempts=3), sleep=slept.append)
    assert caught.value.exit_code == 77
    assert "KMSAccessDeniedError" in str(caught.value)
    assert publisher.kms.decrypts == 1 and slept == []


def test_kms_request_error_is_not_retried(world: tuple[Publisher, BundleSource]) -> None:
    publisher, source = world
    publisher.publish()
    publisher.kms.rejects = 1  # one refusal only: a retry would have succeeded
    slept: list[float] = []
    with pytest.raises(KeyReleaseRefusedError, match="InvalidCiphertextException") as caught:
        load_at_start(BundleLoader(source, Metrics()), Retry(attempts=3), sleep=slept.append)
    assert caught.value.exit_code == 77
    assert publisher.kms.decrypts == 1 and slept == []


def test_bad_bundle_name_is_a_configuration_error(world: tuple[Publisher, BundleSource]) -> None:
    publisher, source = world
    publisher.publish()
    slept: list[float] = []
    bad = replace(source, name="bad name")
    with pytest.raises(ServerConfigError, match="InvalidStoreNameError") as caught:
        load_at_start(BundleLoader(bad, Metrics()), Retry(attempts=3), sleep=slept.append)
    assert caught.value.exit_code == 2
    assert slept == []


def test_corrupt_store_record_is_refused_at_once(
    world: tuple[Publisher, BundleSource], tmp_path: Path
) -> None:
    publisher, source = world
    publisher.publish()
    pointer = tmp_path / "store" / "bundles" / NAME / "latest"
    assert pointer.is_file(), "the directory store's layout changed: find its latest pointer"
    pointer.write_bytes(b"\x00not a bundle id\n")
    slept: list[float] = []
    with pytest.raises(BundleRejectedError, match="StoreCorruptError") as caught:
        load_at_start(BundleLoader(source, Metrics()), Retry(attempts=3), sleep=slept.append)
    assert caught.value.exit_code == 65
    assert slept == [] and publisher.kms.decrypts == 0


def test_reload_swaps_newer_and_ignores_bad_or_older(
    world: tuple[Publisher, BundleSource],
) -> None:
    async def scenario() -> None:
        publisher, source = world
        publisher.publish()
        metrics = Metrics()
        loader = BundleLoader(source, metrics)
        holder = ContextHolder(load_at_start(loader, Retry(attempts=1)))
        reloader = Reloader(loader, holder, metrics)
        assert not await reloader.check()  # nothing new
        publisher.publish(tamper=True)
        assert not await reloader.check()
        assert metrics.reload_rejected == 1
        publisher.publish(seq=1)  # a replayed older seq
        assert not await reloader.check()
        assert holder.current().identity.seq == 1  # type: ignore[union-attr]
        newest = publisher.publish(seq=5)
        publisher.kms.down = 1
        assert not await reloader.check()  # KMS down: keep serving, report
        assert (metrics.kms_errors, metrics.kms_ok) == (1, False)
        publisher.store.down = 1
        assert not await reloader.check()
        assert (metrics.store_errors, metrics.store_ok) == (1, False)
        assert await reloader.check()
        current = holder.current()
        assert current is not None and current.identity.leaf == newest.leaf
        assert (metrics.reloads, metrics.bundle_seq, metrics.kms_ok, metrics.store_ok) == (
            1,
            5,
            True,
            True,
        )

    asyncio.run(scenario())


class _BrokenLoader:
    """Stands in for a BundleLoader whose poll fails in ways nobody typed."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def load_latest(self, *, newer_than: int | None = None) -> None:
        self.calls += 1
        raise self.error


def test_reload_survives_unexpected_errors(world: tuple[Publisher, BundleSource]) -> None:
    """An untyped failure (a bug, an NSM error) in one poll is logged; polling and serving go
    on (it used to end the reload task, and with it `nitrotls serve`, with exit 0)."""

    async def scenario() -> None:
        publisher, source = world
        publisher.publish()
        metrics = Metrics()
        holder = ContextHolder(load_at_start(BundleLoader(source, metrics), Retry(attempts=1)))
        broken = _BrokenLoader(RuntimeError("unforeseen"))
        reloader = Reloader(broken, holder, metrics, interval=0.001, jitter=0.0)  # type: ignore[arg-type]
        task = asyncio.create_task(reloader.run())
        while broken.calls < 3 and not task.done():
            await asyncio.sleep(0.001)
        assert not task.done(), "the reload task ended"
        task.cancel()
        assert holder.current() is not None

    asyncio.run(scenario())


def test_typed_errors_of_any_family_keep_serving(world: tuple[Publisher, BundleSource]) -> None:
    from nitrotls.nsm.errors import NSMDeviceError

    async def scenario() -> None:
        publisher, source = world
        publisher.publish()
        metrics = Metrics()
        holder = ContextHolder(load_at_start(BundleLoader(source, metrics), Retry(attempts=1)))
        reloader = Reloader(_BrokenLoader(NSMDeviceError("nsm busy")), holder, metrics)  # type: ignore[arg-type]
        assert not await reloader.check()

    asyncio.run(scenario())


def test_a_stuck_reload_does_not_hold_up_shutdown(world: tuple[Publisher, BundleSource]) -> None:
    """A poll stuck on a silent KMS must not keep the loop (and SIGTERM) waiting for it."""
    import threading

    release = threading.Event()
    entered = threading.Event()

    class StuckLoader:
        def load_latest(self, *, newer_than: int | None = None) -> None:
            entered.set()
            release.wait(30)

    async def scenario() -> None:
        publisher, source = world
        publisher.publish()
        metrics = Metrics()
        holder = ContextHolder(load_at_start(BundleLoader(source, metrics), Retry(attempts=1)))
        reloader = Reloader(StuckLoader(), holder, metrics)  # type: ignore[arg-type]
        task = asyncio.create_task(reloader.check())
        while not entered.is_set():
            await asyncio.sleep(0.001)
        task.cancel()

    fallback = threading.Timer(10.0, release.set)  # on failure, end the wait instead of hanging
    fallback.start()
    try:
        asyncio.run(scenario())  # returns while the poll is still stuck
        assert not release.is_set()
    finally:
        release.set()
        fallback.cancel()


def test_rotation_under_load(world: tuple[Publisher, BundleSource], pki: PKI) -> None:
    """Keep-alive and new connections run while a new bundle lands: no request fails, and
    connections opened after the switch see the new leaf."""

    async def scenario() -> None:
        publisher, source = world
        first = publisher.publish()
        metrics = Metrics()
        loader = BundleLoader(source, metrics)
        holder = ContextHolder(load_at_start(loader, Retry(attempts=1)))
        reloader = Reloader(loader, holder, metrics)
        async with upstream_server() as up, running(options(up.url), holder) as server:
            port = port_of(server)
            switched = asyncio.Event()
            seen_after: list[bytes] = []
            failures: list[str] = []

            async def keep_alive_loop() -> int:
                reader, writer = await open_tls(port, pki.client_context())
                count = 0
                while count < 60 or not switched.is_set():
                    writer.write(b"GET /k HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    status, _, _ = await read_response(reader)
                    if status != 200:
                        failures.append(f"keep-alive {status}")
                    count += 1
                writer.close()
                return count

            async def new_connection_loop() -> int:
                count = 0
                while count < 30 or not switched.is_set() or len(seen_after) < 5:
                    after = switched.is_set()
                    reader, writer = await open_tls(port, pki.client_context())
                    leaf = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                    writer.write(b"GET /n HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    status, _, _ = await read_response(reader)
                    if status != 200:
                        failures.append(f"new connection {status}")
                    if after:
                        seen_after.append(leaf)
                    writer.close()
                    count += 1
                return count

            async def rotate() -> None:
                await asyncio.sleep(0.2)
                publisher.publish()
                assert await reloader.check()
                switched.set()

            results = await asyncio.wait_for(
                asyncio.gather(keep_alive_loop(), new_connection_loop(), rotate()), 60
            )
            assert failures == []
            assert results[0] >= 60 and results[1] >= 30
            second = holder.current()
            assert second is not None and second.identity.leaf != first.leaf
            assert seen_after and all(leaf == second.identity.leaf for leaf in seen_after)

    asyncio.run(scenario())
