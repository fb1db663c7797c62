"""From the store to a served TLS context: fetch, verify, KMS-decrypt, open, load, wipe.

A bundle proves itself (the store is untrusted): :func:`nitrotls.bundle.verify` checks the
generator's attestation against the PCR policy (debug refused), the binding hash, the chain for
its names now, and that ``seq`` does not fall below the highest this process has served. Only
then is KMS asked, with this enclave's own attestation, for the data key; the opened PKCS#8 key
goes into an ``SSLContext`` through :func:`context_from_memory` and every plaintext copy is
zeroed. :class:`Reloader` polls the store and swaps newer bundles in for new connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from nitrotls.attestation import Policy, Verifier
from nitrotls.bundle import BundleError, DataKeyDecrypter, VerifiedBundle, unseal, verify
from nitrotls.errors import NitroTLSError
from nitrotls.kms.errors import KMSError, KMSUnavailableError
from nitrotls.nsm.source import AttestationSource
from nitrotls.secrets import wipe
from nitrotls.server.errors import (
    BundleRejectedError,
    KeyReleaseRefusedError,
    ServerConfigError,
    ServerError,
    StartupUnavailableError,
    TLSContextError,
)
from nitrotls.server.identity import ContextHolder, Served, ServedIdentity
from nitrotls.server.metrics import Metrics
from nitrotls.server.tls import ALPN_HTTP1, context_from_memory, policy_context
from nitrotls.store import BundleStore, StoreError
from nitrotls.store.errors import InvalidStoreNameError, StoreSpecError, StoreUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class BundleSource:
    """Everything needed to turn the newest bundle of ``name`` into a served context."""

    store: BundleStore
    name: str
    verifier: Verifier
    generator_policy: Policy
    kms: DataKeyDecrypter
    enclave: AttestationSource
    names: tuple[str, ...] | None = None
    ca_roots: tuple[bytes, ...] | None = None
    alpn: tuple[str, ...] = ALPN_HTTP1


@dataclass(frozen=True)
class Retry:
    """Start-up retries while KMS or the store are unreachable."""

    attempts: int = 6
    initial: float = 1.0
    maximum: float = 30.0

    def delays(self) -> list[float]:
        delay, out = self.initial, []
        for _ in range(self.attempts - 1):
            out.append(delay)
            delay = min(self.maximum, delay * 2)
        return out


class BundleLoader:
    """Loads bundles for one name, never going backwards in ``seq``."""

    def __init__(self, source: BundleSource, metrics: Metrics, *, min_seq: int = 0) -> None:
        self.source = source
        self.metrics = metrics
        self.highest_seq = min_seq
        self.current_id: bytes | None = None
        self._rejected: set[str] = set()

    def load_latest(self, *, newer_than: int | None = None) -> Served | None:
        """The newest bundle as a :class:`Served`; ``None`` if it is the one already served
        (or, with ``newer_than``, not newer). Raises typed store, bundle and KMS errors."""
        source = self.source
        try:
            latest = source.store.latest(source.name)
            self.metrics.store_ok = True
        except StoreError:
            self.metrics.store_errors += 1
            self.metrics.store_ok = False
            raise
        if latest is None:
            raise BundleRejectedError(
                f"the store holds no bundle named {source.name!r}; run the generator first"
            )
        if latest.id in self._rejected:
            return None
        try:
            verified = self._verify(latest.data)
        except BundleError:
            self._rejected.add(latest.id)
            raise
        if verified.bundle.bundle_id == self.current_id:
            return None
        if newer_than is not None and verified.seq <= newer_than:
            return None
        served = self._open(verified)
        self.highest_seq = max(self.highest_seq, verified.seq)
        self.current_id = verified.bundle.bundle_id
        return served

    def _verify(self, data: bytes) -> VerifiedBundle:
        source = self.source
        return verify(
            data,
            source.verifier,
            source.generator_policy,
            at=datetime.now(UTC),
            min_seq=self.highest_seq,
            names=source.names,
            ca_roots=source.ca_roots,
        )

    def _open(self, verified: VerifiedBundle) -> Served:
        source = self.source
        try:
            key = unseal(verified, source.kms, source.enclave)
            self.metrics.kms_ok = True
        except KMSError:
            self.metrics.kms_errors += 1
            self.metrics.kms_ok = False
            raise
        try:
            context = context_from_memory(list(verified.bundle.chain), key, alpn=source.alpn)
        finally:
            wipe(key)
        identity = ServedIdentity.for_chain(
            list(verified.bundle.chain),
            bundle_id=verified.bundle.bundle_id,
            seq=verified.seq,
            name=verified.name,
        )
        return Served(context, identity)


def load_at_start(loader: BundleLoader, retry: Retry, *, sleep=time.sleep) -> Served:  # type: ignore[no-untyped-def]
    """The first context: retry while KMS or the store are unreachable, then a distinct exit
    code. Failures that waiting cannot mend (a refused bundle, a bad name, KMS saying no) end
    at once, each with its own exit code."""
    delays = retry.delays()
    while True:
        try:
            served = loader.load_latest()
        except (StoreUnavailableError, KMSUnavailableError) as error:
            if not delays:
                raise StartupUnavailableError(
                    f"gave up after {retry.attempts} attempts: {type(error).__name__}: "
                    f"{str(error).rstrip('.')}. "
                    "Check that the store and KMS are reachable from this enclave (the host's "
                    "outbound proxy), then start again."
                ) from None
            delay = delays.pop(0)
            log.warning("cannot load the bundle yet (%s); retrying in %.1fs", error, delay)
            sleep(delay)
            continue
        except (BundleError, StoreError, KMSError) as error:
            raise _lasting(loader.source.name, error) from None
        if served is None:  # cannot happen on a fresh loader; fail closed all the same
            raise BundleRejectedError("no bundle could be loaded")
        return served


def _lasting(name: str, error: BundleError | StoreError | KMSError) -> ServerError:
    """The start-up error for a failure that retrying cannot mend."""
    kind = type(error).__name__
    if isinstance(error, BundleError):
        return BundleRejectedError(f"the newest bundle of {name!r} was refused: {error}")
    if isinstance(error, (InvalidStoreNameError, StoreSpecError)):
        return ServerConfigError(f"the store cannot be used as configured ({kind}): {error}")
    if isinstance(error, StoreError):
        return BundleRejectedError(f"the store's record of {name!r} is unusable ({kind}): {error}")
    return KeyReleaseRefusedError(f"KMS did not release the data key ({kind}): {error}")


class Reloader:
    """Polls the store every ``interval`` (± ``jitter``) and swaps newer bundles in."""

    def __init__(
        self,
        loader: BundleLoader,
        holder: ContextHolder,
        metrics: Metrics,
        *,
        interval: float = 300.0,
        jitter: float = 0.1,
    ) -> None:
        self.loader = loader
        self.holder = holder
        self.metrics = metrics
        self.interval = interval
        self.jitter = jitter

    def next_delay(self) -> float:
        return self.interval * (1 + random.uniform(-self.jitter, self.jitter))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.next_delay())
            try:
                await self.check()
            except Exception:  # a bug or an unforeseen failure must not end serving
                log.exception("reload check failed unexpectedly; still serving the current bundle")

    async def check(self) -> bool:
        """One poll; True when a new bundle now serves. Failures are logged and counted."""
        self.metrics.last_reload_check = time.time()
        current = self.holder.current()
        if current is None:
            return False
        try:
            served = await in_daemon_thread(
                functools.partial(self.loader.load_latest, newer_than=current.identity.seq)
            )
        except BundleError as error:
            self.metrics.reload_rejected += 1
            log.warning("ignoring a bundle that failed verification: %s", error)
            return False
        except NitroTLSError as error:  # store, KMS, NSM, TLS: typed, and none ends serving
            log.warning(
                "reload check failed (%s): still serving seq %d", error, current.identity.seq
            )
            return False
        if served is None:
            return False
        self.holder.swap(served)
        self.metrics.reloads += 1
        note_served(self.metrics, served)
        log.info(
            "now serving bundle seq %d (%s) to new connections",
            served.identity.seq,
            served.identity.bundle_id.hex(),
        )
        return True


async def in_daemon_thread(call: Callable[[], T]) -> T:
    """``call()`` in a daemon thread, awaited. Unlike ``asyncio.to_thread``, a call stuck on a
    silent KMS or store (up to minutes of client timeouts and retries) neither holds up the
    event loop's shutdown nor the process's exit: SIGTERM then takes ``grace`` seconds, not the
    remaining timeouts. A result that arrives after the caller gave up is dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = call(), None
        except BaseException as failure:  # handed to the awaiting task, which decides
            result, error = None, failure
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="nitrotls-reload", daemon=True).start()
    return await future


def note_served(metrics: Metrics, served: Served) -> None:
    metrics.bundle_seq = served.identity.seq
    metrics.not_after = served.identity.not_after.timestamp()


def load_insecure(cert_file: Path, key_file: Path, alpn: Sequence[str] = ALPN_HTTP1) -> Served:
    """``--insecure-bundled-cert``: certificate files baked into the image (development only).

    Whoever has the image has the key; that is why the attestation says
    ``nitrotls/tls-insecure/1`` and clients refuse it by default.
    """
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    context = policy_context(alpn)
    try:
        context.load_cert_chain(cert_file, key_file)
        pem = cert_file.read_bytes()
    except (OSError, ssl.SSLError) as error:
        raise TLSContextError(
            f"cannot load {cert_file} / {key_file}: {getattr(error, 'reason', None) or error}"
        ) from None
    chain = [
        c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(pem)
    ]
    identity = ServedIdentity.for_chain(chain, bundle_id=b"", seq=0, name="insecure", insecure=True)
    return Served(context, identity)
