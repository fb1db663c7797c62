"""A readable account of a stored bundle, for `nitrotls bundle inspect`.

This is description, not verification: the generator PCRs shown are what the document claims,
and ``binding_ok`` only says whether its user_data matches these bytes. `bundle verify` (or
:func:`nitrotls.bundle.verify`) is what authenticates a bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from nitrotls.attestation import parse_document
from nitrotls.attestation.errors import AttestationError
from nitrotls.bundle.chain import dns_names
from nitrotls.bundle.format import decode
from nitrotls.bundle.verify import key_type_of

SHOWN_PCRS = (0, 1, 2, 8)


@dataclass(frozen=True)
class BundleSummary:
    name: str
    bundle_id: str
    seq: int
    created: datetime
    domains: tuple[str, ...]
    not_before: datetime | None
    not_after: datetime | None
    key_type: str | None
    issuer: str | None
    kms_key_id: str
    generator_module: str | None
    generator_pcrs: dict[int, str]
    generator_debug: bool | None
    binding_ok: bool
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.bundle_id,
            "seq": self.seq,
            "created": self.created.isoformat(),
            "domains": list(self.domains),
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "key_type": self.key_type,
            "issuer": self.issuer,
            "kms_key_id": self.kms_key_id,
            "generator": {
                "module_id": self.generator_module,
                "pcrs": {f"PCR{i}": v for i, v in self.generator_pcrs.items()},
                "debug": self.generator_debug,
            },
            "binding_ok": self.binding_ok,
            "problem": self.problem,
        }


def summarize(raw: bytes) -> BundleSummary:
    """Describe ``raw``; raises :class:`BundleError` only when it is not a v1 bundle at all."""
    bundle = decode(raw)
    problems: list[str] = []
    leaf: x509.Certificate | None = None
    try:
        leaf = x509.load_der_x509_certificate(bundle.chain[0])
    except ValueError as error:
        problems.append(f"leaf certificate unreadable: {error}")
    module, pcrs, debug, binding_ok = None, {}, None, False
    try:
        document = parse_document(bundle.gen or b"").document
        module, debug = document.module_id, document.is_debug
        pcrs = {i: document.pcrs[i].hex() for i in SHOWN_PCRS if i in document.pcrs}
        binding_ok = document.user_data == bundle.binding_user_data()
    except AttestationError as error:
        problems.append(f"generator document unreadable: {error}")
    if not binding_ok and not problems:
        problems.append("the generator document does not bind these bytes")
    return BundleSummary(
        name=bundle.name,
        bundle_id=bundle.id_hex,
        seq=bundle.seq,
        created=bundle.created,
        domains=dns_names(leaf) if leaf is not None else (),
        not_before=leaf.not_valid_before_utc if leaf is not None else None,
        not_after=leaf.not_valid_after_utc if leaf is not None else None,
        key_type=key_type_of(leaf) if leaf is not None else None,
        issuer=leaf.issuer.rfc4514_string() if leaf is not None else None,
        kms_key_id=bundle.dek.kms_key_id,
        generator_module=module,
        generator_pcrs=pcrs,
        generator_debug=debug,
        binding_ok=binding_ok,
        problem="; ".join(problems) or None,
    )


__all__ = ["BundleSummary", "summarize"]
