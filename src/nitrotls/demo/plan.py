"""Deciding a run before starting anything: ports, which CA, and whether the CA is needed.

A second run reuses the bundle while it is not due for renewal; then the generator needs no CA,
so the demo does not start one (Pebble, its HTTP-01 responder and the enclave's ACME forwarder).
The check is the generator's own rule (``nitrotls.generator.renewal.decide``) with a margin, so
the generator, asked a moment later, cannot disagree; if the run must issue after all (a new
KMS key), the CA is started late.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from nitrotls.config import GeneratorSection
from nitrotls.demo.layout import BUNDLE_NAME, DOMAIN, DemoLayout
from nitrotls.demo.state import DemoState

DUE_MARGIN = timedelta(minutes=10)


@dataclass
class Ports:
    """Free TCP ports on 127.0.0.1, each handed out once."""

    taken: set[int] = field(default_factory=set)

    def next(self) -> int:
        while True:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            if port not in self.taken:
                self.taken.add(port)
                return port


@dataclass(frozen=True)
class PortPlan:
    """Every port of one run (the public one is the user's; the rest are free right now)."""

    public: int
    kms: int
    webapp: int
    health: int
    generator_kms: int  # enclave forward inside the generator enclave
    generator_acme: int
    main_kms: int  # enclave forward inside the main enclave
    acme: int  # Pebble's ACME, management, TLS-ALPN and HTTP-01 (responder) ports
    acme_management: int
    acme_tls: int
    responder: int

    @classmethod
    def choose(cls, public: int) -> PortPlan:
        """``public`` 0 picks a free port for it too."""
        ports = Ports({public} if public else set())
        return cls(public or ports.next(), *(ports.next() for _ in range(10)))


@dataclass(frozen=True)
class CAPlan:
    """Which CA signs, and whether this run must start it."""

    kind: str  # "pebble" | "local"
    needed: bool
    reason: str
    force: bool  # pass --force to the generator
    issued_with: str  # what the state records after an issuance


def plan_ca(kind: str, layout: DemoLayout, state: DemoState, generator_pcr0: bytes) -> CAPlan:
    """Whether to start the CA: yes unless the current bundle is fine for a while."""
    issued_with = f"{kind}:{generator_pcr0.hex()}"
    if state.kms_key_id is None:
        return CAPlan(kind, True, "first run: no KMS key yet", True, issued_with)
    if state.issued_with != issued_with:
        why = "the CA or the generator image changed" if state.issued_with else "no bundle yet"
        return CAPlan(kind, True, why, True, issued_with)
    due, reason = bundle_due(layout.store_spec, BUNDLE_NAME, (DOMAIN,))
    return CAPlan(kind, due, reason, False, issued_with)


def bundle_due(
    store_spec: str, name: str, domains: tuple[str, ...], *, margin: timedelta = DUE_MARGIN
) -> tuple[bool, str]:
    """Whether the generator will renew ``name`` within ``margin`` (its rule, its defaults)."""
    from nitrotls.generator.renewal import decide, read_previous
    from nitrotls.store import StoreError, open_store

    settings = GeneratorSection()
    try:
        with open_store(store_spec) as store:
            previous = read_previous(store, name)
    except StoreError as error:
        return True, f"the store could not be read ({error})"
    decision = decide(
        previous,
        domains=domains,
        key_type=settings.key_type,
        now=datetime.now(UTC) + margin,
        fraction=settings.renew_fraction,
        jitter=settings.renew_jitter,
    )
    if decision.due:
        return True, decision.reason
    when = f"{decision.at:%Y-%m-%d %H:%M}Z" if decision.at else "later"
    return False, f"bundle not due for renewal until {when}"
