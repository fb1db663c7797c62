"""Which CA signs: the local dev CA, or ACME with the sealed account from the store."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from nitrotls.ca import DnsHook, LocalCA, command_dns_hook
from nitrotls.config import CASection
from nitrotls.generator.account import AccountVault
from nitrotls.generator.errors import GeneratorConfigError
from nitrotls.generator.ports import KeyService
from nitrotls.generator.steps import StepLog
from nitrotls.nsm import AttestationSource
from nitrotls.store import BundleStore

if TYPE_CHECKING:  # imported when an ACME CA is built: a local-CA process never loads acme
    from nitrotls.ca.acme_ca import AcmeCA, ExternalAccountBinding

EAB_HMAC_ENV = "NITROTLS_EAB_HMAC"
# Order and authorization polling: a fast CA (Pebble) is done within a few milliseconds of the
# challenge answer or the finalize request, so the first wait is 10 ms; doubling reaches the 1 s
# cap after 7 polls, so a slow CA (Let's Encrypt: seconds) sees one or two more polls than under
# the CA package's default (50 ms, growing by half). A server's Retry-After still comes first.
POLL_INITIAL, POLL_FACTOR, POLL_MAXIMUM = 0.01, 2.0, 1.0


class Authority(Protocol):
    """A CA the generator can use and close: ``issue(csr) -> DER chain, leaf first``."""

    def issue(self, csr: bytes) -> tuple[bytes, ...]: ...


class PendingCertificate(Protocol):
    """An order placed before the key: ``finish(csr)`` gives the chain; ``abandon()`` withdraws."""

    def finish(self, csr: bytes) -> tuple[bytes, ...]: ...

    def abandon(self) -> None: ...


@runtime_checkable
class OrderingAuthority(Protocol):
    """A CA that takes the order before the key exists (ACME): it validates during the sealing.

    Only the names go out early; the CSR still leaves the enclave after the key is sealed.
    """

    def begin(self, domains: Sequence[str]) -> PendingCertificate: ...


AuthorityFactory = Callable[[], Authority]


def authority_factory(
    section: CASection,
    *,
    store: BundleStore,
    kms: KeyService,
    source: AttestationSource,
    kms_key_id: str,
    log: StepLog,
    dns_hook: DnsHook | None = None,
    secret_observer: Callable[[str, bytes], None] | None = None,
) -> AuthorityFactory:
    """A factory, so the (KMS-dependent) account unsealing happens inside the retried issuance.

    An ACME client is imported here, at start-up, rather than in the middle of an issuance; with
    the local CA it is never imported.
    """
    if not section.is_local:
        importlib.import_module("nitrotls.ca.acme_ca")

    def make() -> Authority:
        if section.is_local:
            ca = LocalCA(validity=timedelta(days=section.local_validity_days))
            log.step("ca", "using the local dev CA (root under the data directory)")
            return ca
        vault = AccountVault(store, kms, source, kms_key_id, log, secret_observer)
        return _acme(section, store, vault, log, dns_hook)

    return make


def _acme(
    section: CASection,
    store: BundleStore,
    vault: AccountVault,
    log: StepLog,
    dns_hook: DnsHook | None,
) -> AcmeCA:
    from nitrotls.ca.acme_ca import AcmeCA, Backoff

    url = section.directory_url
    account = vault.load(url)
    hook = dns_hook
    if section.challenge == "dns-01" and hook is None:
        if not section.dns_hook:
            raise GeneratorConfigError(
                "dns-01 needs --dns-hook CMD (called CMD add|remove NAME VALUE)"
            )
        hook = command_dns_hook(section.dns_hook)
    acme = AcmeCA(
        url,
        account.key,
        ca_bundle=section.ca_bundle,
        contact=section.contact,
        eab=_eab(section),
        challenge=section.challenge,
        http01_publisher=store if section.challenge == "http-01" else None,
        dns_hook=hook,
        account_uri=account.uri,
        timeout=section.timeout,
        dns_propagation_delay=section.dns_propagation_delay,
        backoff=Backoff(initial=POLL_INITIAL, factor=POLL_FACTOR, maximum=POLL_MAXIMUM),
    )
    try:
        registered = acme.account()
        vault.remember_uri(account, registered.uri)
    except BaseException:
        acme.close()
        raise
    log.step("ca", f"ACME account {registered.uri} at {url} ({section.challenge})")
    return acme


def _eab(section: CASection) -> ExternalAccountBinding | None:
    from nitrotls.ca.acme_ca import ExternalAccountBinding

    hmac = section.eab_hmac or os.environ.get(EAB_HMAC_ENV) or None
    if section.eab_kid is None:
        return None
    if hmac is None:
        raise GeneratorConfigError(f"--eab-kid needs --eab-hmac (or ${EAB_HMAC_ENV})")
    return ExternalAccountBinding(section.eab_kid, hmac)
