"""One issuance, start to finish, under the store lease.

Order (each step logs one line and offers a test pause point): with ACME, the order for the
names first (the CA validates meanwhile) → key → seal (GenerateDataKey with Recipient; plaintext
wiped) → CSR → certificate → bundle bound by a second attestation → publish by compare-and-swap
on the latest pointer. Nothing is visible to readers until the final swap, so a crash at any
point leaves the previous bundle in force; the lease then expires on its own.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from cryptography import x509

from nitrotls.bundle import (
    BundleFormatError,
    SealedKey,
    WrappedDataKey,
    bind,
    build,
    check_name,
    encryption_context,
    new_bundle_id,
    seal_key,
)
from nitrotls.config import GeneratorSection
from nitrotls.generator.authority import (
    Authority,
    AuthorityFactory,
    OrderingAuthority,
    PendingCertificate,
)
from nitrotls.generator.errors import GeneratorConfigError, LeaseUnavailableError
from nitrotls.generator.keys import BornKey
from nitrotls.generator.ports import KeyService
from nitrotls.generator.renewal import Decision, Previous, decide, read_previous
from nitrotls.generator.steps import StepLog, pause_point
from nitrotls.nsm import AttestationSource
from nitrotls.store import BundleStore, Lease, LeaseHeldError, StoreError

SecretObserver = Callable[[str, bytes], None]
LEASE_POLL = 0.25


class Clock(Protocol):
    def __call__(self) -> datetime: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Outcome:
    """What one pass did: issued a bundle, or found none due."""

    issued: bool
    name: str
    reason: str
    bundle_id: str | None = None
    seq: int | None = None
    not_after: datetime | None = None


@dataclass(frozen=True)
class Plan:
    """What to issue; built once from the configuration."""

    name: str
    domains: tuple[str, ...]
    key_type: str
    kms_key_id: str

    @classmethod
    def from_config(cls, section: GeneratorSection, kms_key_id: str | None) -> Plan:
        if not section.domains:
            raise GeneratorConfigError(
                "no domains to certify: give --domain (or [generator] domains)"
            )
        name = section.bundle_name
        if name is None:
            raise GeneratorConfigError("no bundle name: give --name (or [generator] bundle)")
        if not kms_key_id:
            raise GeneratorConfigError("no KMS key: give --kms-key-id (or [kms] key_id)")
        try:
            check_name(name)
        except BundleFormatError as error:
            raise GeneratorConfigError(f"--name: {error}") from None
        return cls(name, tuple(d.lower() for d in section.domains), section.key_type, kms_key_id)


class Issuer:
    """Issues bundles for one name; holds nothing secret between issuances."""

    def __init__(
        self,
        plan: Plan,
        settings: GeneratorSection,
        *,
        source: AttestationSource,
        kms: KeyService,
        store: BundleStore,
        authority: AuthorityFactory,
        log: StepLog | None = None,
        clock: Clock = utc_now,
        holder: str | None = None,
        secret_observer: SecretObserver | None = None,
    ) -> None:
        self.plan, self.settings = plan, settings
        self._source, self._kms, self._store = source, kms, store
        self._authority_factory = authority
        self._authority: Authority | None = None
        self._log = log or StepLog()
        self.clock = clock
        self._holder = holder or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self._observe = secret_observer  # test seam only: sees plaintext before it is wiped
        self._lease: Lease | None = None
        self._renewed_at = 0.0

    # -- decisions ---------------------------------------------------------------------------

    def decision(self) -> Decision:
        """Whether the latest bundle must be replaced (read from the store, no lease)."""
        return self._decide(read_previous(self._store, self.plan.name))

    def _decide(self, previous: Previous | None) -> Decision:
        return decide(
            previous,
            domains=self.plan.domains,
            key_type=self.plan.key_type,
            now=self.clock(),
            fraction=self.settings.renew_fraction,
            jitter=self.settings.renew_jitter,
        )

    # -- one pass ----------------------------------------------------------------------------

    def issue(self, *, force: bool = False) -> Outcome:
        """Take the lease, re-check, and issue when due (or forced)."""
        self._acquire_lease()
        try:
            previous = read_previous(self._store, self.plan.name)
            decision = self._decide(previous)
            if not force and not decision.due:
                self._log.step("renew", f"not due: {decision.reason}", name=self.plan.name)
                return Outcome(False, self.plan.name, decision.reason)
            reason = "forced" if force and not decision.due else decision.reason
            self._log.step("renew", f"issuing {self.plan.name}: {reason}", name=self.plan.name)
            return self._issue(previous)
        finally:
            self._release_lease()

    def _issue(self, previous: Previous | None) -> Outcome:
        plan = self.plan
        seq = previous.seq + 1 if previous else 1
        bundle_id = new_bundle_id()
        pending = self._order_ahead()
        try:
            sealed, dek, csr = self._new_key(bundle_id)
            self._keep_lease()
            chain = pending.finish(csr) if pending is not None else self._certify(csr)
        finally:
            if pending is not None:
                pending.abandon()
        leaf = x509.load_der_x509_certificate(chain[0])
        self._log.step(
            "cert",
            f"certificate serial {leaf.serial_number:x} valid until "
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ} from {leaf.issuer.rfc4514_string()}",
            chain_length=len(chain),
        )
        pause_point("after-cert")
        unbound = build(
            bundle_id=bundle_id, seq=seq, name=plan.name, chain=chain, key=sealed, dek=dek
        )
        raw = bind(unbound, self._source).encode()
        self._log.step(
            "bind", f"bundle seq {seq} bound by the generator's attestation", bytes=len(raw)
        )
        pause_point("after-bind")
        self._keep_lease(force=True)
        pause_point("before-publish")
        self._store.put(
            plan.name,
            bundle_id.hex(),
            raw,
            expected_previous=previous.store_id if previous else None,
        )
        self._log.step(
            "publish",
            f"published {plan.name} seq {seq} as {bundle_id.hex()}",
            previous=previous.store_id if previous else None,
        )
        pause_point("after-publish")
        return Outcome(True, plan.name, "issued", bundle_id.hex(), seq, leaf.not_valid_after_utc)

    def _order_ahead(self) -> PendingCertificate | None:
        """An ACME order placed before the key exists, so the CA validates while it is sealed.

        Only the names leave now (they are public); the CSR, the first thing about the key to
        leave the enclave, goes out after sealing, as before.
        """
        authority = self._current_authority()
        if not isinstance(authority, OrderingAuthority):
            return None
        pending = authority.begin(self.plan.domains)
        self._log.step(
            "order", f"ordered a certificate for {', '.join(self.plan.domains)}; CA validating"
        )
        return pending

    def _new_key(self, bundle_id: bytes) -> tuple[SealedKey, WrappedDataKey, bytes]:
        """Make the key, seal it at once, sign the CSR; the key object is gone on return."""
        plan = self.plan
        with BornKey(plan.key_type) as born:
            self._log.step(
                "key", f"made a {plan.key_type} key in the enclave", spki_sha384=_digest(born.spki)
            )
            self._see("tls-key", born.pkcs8)
            pause_point("after-key")
            sealed, dek = self._seal(born, bundle_id)
            pause_point("after-seal")
            csr = born.csr(plan.domains)
        self._log.step("csr", f"CSR for {', '.join(plan.domains)}", csr_bytes=len(csr))
        pause_point("after-csr")
        return sealed, dek, csr

    def _seal(self, born: BornKey, bundle_id: bytes) -> tuple[SealedKey, WrappedDataKey]:
        plan = self.plan
        context = encryption_context(bundle_id, plan.name, born.spki)
        data_key = self._kms.generate_data_key(plan.kms_key_id, context, self._source)
        with data_key.plaintext as secret:
            self._see("data-key", secret.data)
            sealed = seal_key(
                born.pkcs8, secret, bundle_id=bundle_id, name=plan.name, spki_der=born.spki
            )
        born.wipe_private()
        self._log.step(
            "seal",
            f"key sealed under a data key from KMS key {data_key.key_id}; plaintext wiped",
            kms_key_id=data_key.key_id,
        )
        return sealed, WrappedDataKey(data_key.key_id, data_key.ciphertext_blob, context)

    def _certify(self, csr: bytes) -> tuple[bytes, ...]:
        return self._current_authority().issue(csr)

    def _current_authority(self) -> Authority:
        if self._authority is None:
            self._authority = self._authority_factory()
        return self._authority

    def close(self) -> None:
        closer = getattr(self._authority, "close", None)
        if callable(closer):
            closer()
        self._authority = None

    def _see(self, what: str, secret: bytearray) -> None:
        if self._observe is not None:
            self._observe(what, bytes(secret))

    # -- the lease ---------------------------------------------------------------------------

    def _acquire_lease(self) -> None:
        ttl = self.settings.lease_ttl
        wait = self.settings.lease_wait if self.settings.lease_wait is not None else ttl + 5
        deadline = time.monotonic() + wait
        announced = False
        while True:
            try:
                self._lease = self._store.acquire_lease(self.plan.name, self._holder, ttl)
                break
            except LeaseHeldError as error:
                if time.monotonic() >= deadline:
                    raise LeaseUnavailableError(
                        f"another generator holds the lease on {self.plan.name!r} ({error}); "
                        f"waited {wait:.0f} s"
                    ) from None
                if not announced:
                    self._log.step("lease", f"lease on {self.plan.name} is held; waiting")
                    announced = True
                time.sleep(LEASE_POLL)
        self._renewed_at = time.monotonic()
        self._log.step("lease", f"holding the lease on {self.plan.name} for {ttl:g} s")

    def _keep_lease(self, *, force: bool = False) -> None:
        """Renew once a third of the TTL has passed (always before publishing)."""
        if self._lease is None:
            return
        ttl = self.settings.lease_ttl
        if force or time.monotonic() - self._renewed_at > ttl / 3:
            self._lease = self._store.renew_lease(self._lease, ttl)
            self._renewed_at = time.monotonic()

    def _release_lease(self) -> None:
        if self._lease is not None:
            lease, self._lease = self._lease, None
            try:
                self._store.release_lease(lease)
            except StoreError as error:  # it expires on its own; do not hide the real outcome
                self._log.warning("lease", f"could not release the lease ({error}); it will expire")


def _digest(spki: bytes) -> str:
    return hashlib.sha384(spki).hexdigest()[:16]
