"""Assembling a generator from ``nitrotls.toml`` (plus overrides): store, KMS, CA, issuer."""

from __future__ import annotations

from nitrotls.ca import DnsHook
from nitrotls.config import Config
from nitrotls.generator.authority import authority_factory
from nitrotls.generator.issuer import Issuer, Plan, SecretObserver
from nitrotls.generator.ports import KeyService
from nitrotls.generator.steps import StepLog
from nitrotls.nsm import AttestationSource
from nitrotls.store import BundleStore, open_store


def open_kms(config: Config) -> KeyService:
    """The KMS client for ``[kms]`` (boto3 underneath; credentials from its usual chain)."""
    from nitrotls.kms.client import KMSClient

    return KMSClient(endpoint_url=config.kms.endpoint, region_name=config.kms.region)


def make_issuer(
    config: Config,
    source: AttestationSource,
    *,
    store: BundleStore | None = None,
    kms: KeyService | None = None,
    dns_hook: DnsHook | None = None,
    log: StepLog | None = None,
    secret_observer: SecretObserver | None = None,
) -> Issuer:
    """An :class:`Issuer` for ``config``; pass ``store``/``kms`` to reuse open clients."""
    plan = Plan.from_config(config.generator, config.kms.key_id)
    log = log or StepLog()
    store = store if store is not None else open_store(config.store.spec)
    kms = kms if kms is not None else open_kms(config)
    factory = authority_factory(
        config.ca,
        store=store,
        kms=kms,
        source=source,
        kms_key_id=plan.kms_key_id,
        log=log,
        dns_hook=dns_hook,
        secret_observer=secret_observer,
    )
    return Issuer(
        plan,
        config.generator,
        source=source,
        kms=kms,
        store=store,
        authority=factory,
        log=log,
        secret_observer=secret_observer,
    )
