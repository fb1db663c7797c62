"""When to renew: two thirds of the certificate's lifetime, plus a jitter fixed per bundle.

The jitter comes from the bundle id, so every look at the same bundle gives the same answer (a
cron job does not flap), while a fleet of names spreads out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from nitrotls.bundle import Bundle, BundleError, decode, key_type_of
from nitrotls.store import BundleStore, StoreError


@dataclass(frozen=True)
class Previous:
    """The newest published bundle of a name, as far as the generator needs it."""

    store_id: str
    seq: int
    bundle: Bundle | None  # None when the stored bytes do not decode
    leaf: x509.Certificate | None


@dataclass(frozen=True)
class Decision:
    due: bool
    at: datetime | None  # when it will be due (None: now)
    reason: str


def read_previous(store: BundleStore, name: str) -> Previous | None:
    """The latest bundle of ``name``; a garbled one still yields the highest readable seq."""
    latest = store.latest(name)
    if latest is None:
        return None
    try:
        bundle = decode(latest.data)
        leaf = x509.load_der_x509_certificate(bundle.chain[0])
        return Previous(latest.id, bundle.seq, bundle, leaf)
    except (BundleError, ValueError):
        return Previous(latest.id, _highest_seq(store, name), None, None)


def _highest_seq(store: BundleStore, name: str) -> int:
    best = 0
    for bundle_id in store.list(name):
        try:
            best = max(best, decode(store.get(name, bundle_id)).seq)
        except (BundleError, StoreError):
            continue
    return best


def jitter_share(bundle_id: bytes) -> float:
    """A number in [0, 1) fixed by the bundle id."""
    return int.from_bytes(hashlib.sha256(bundle_id).digest()[:8], "big") / 2**64


def decide(
    previous: Previous | None,
    *,
    domains: Sequence[str],
    key_type: str,
    now: datetime,
    fraction: float,
    jitter: float,
) -> Decision:
    """Whether ``previous`` must be replaced now, and if not, when."""
    if previous is None:
        return Decision(True, None, "no bundle published yet")
    if previous.bundle is None or previous.leaf is None:
        return Decision(True, None, "the latest bundle does not decode")
    leaf, bundle = previous.leaf, previous.bundle
    wanted = sorted(d.lower() for d in domains)
    current = sorted(_dns_names(leaf))
    if wanted != current:
        return Decision(True, None, f"domains changed ({', '.join(current)} → {', '.join(wanted)})")
    if key_type_of(leaf) != key_type:
        return Decision(True, None, f"key type changed ({key_type_of(leaf)} → {key_type})")
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    lifetime = end - start
    due_at = start + lifetime * (fraction + jitter * jitter_share(bundle.bundle_id))
    if now >= due_at:
        return Decision(True, None, f"renewal was due at {due_at:%Y-%m-%d %H:%M:%SZ}")
    return Decision(False, due_at, f"certificate valid until {end:%Y-%m-%d %H:%M:%SZ}")


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    return [name.lower() for name in san.get_values_for_type(x509.DNSName)]
