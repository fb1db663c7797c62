"""The certificate chain: pinned root only, every link proven, CA rules, validity at an instant."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.attestation_forge import (
    LEAF_USAGE,
    NOW,
    Authority,
    Spec,
    aws_shaped_specs,
    build_chain,
    cose,
    document,
    issue,
    name,
)
from attestation.attestation_vectors import Vector
from nitrotls.attestation import (
    BrokenChainError,
    CertificateExpiredError,
    DocumentEncodingError,
    PolicyError,
    UnsupportedAlgorithmError,
    UntrustedRootError,
    Verifier,
)


def _real_subjects(vector: Vector) -> list[x509.Name]:
    ders = [*vector.document.cabundle, vector.document.certificate]
    return [x509.load_der_x509_certificate(der).subject for der in ders]


def _with_cabundle(vector: Vector, cabundle: list[bytes], leaf: Authority | None = None) -> bytes:
    """The real payload with another cabundle (and leaf); re-signed by ``leaf`` when given."""
    payload: dict[str, Any] = dict(vector.payload)
    payload["cabundle"] = cabundle
    if leaf is not None:
        payload["certificate"] = leaf.der
    return cose(bytes(cbor2.dumps(payload)), leaf.key if leaf else None)


def test_self_signed_intermediate_with_copied_subject_is_refused(production: Vector) -> None:
    real = list(production.document.cabundle)
    subjects = _real_subjects(production)
    # The attacker mints a self-signed CA named like AWS's regional CA and builds beneath it.
    specs = aws_shaped_specs(subjects)[1:]
    specs[0] = dataclasses.replace(specs[0], not_before=production.at - dt.timedelta(days=1))
    fake = build_chain(specs)
    data = _with_cabundle(production, [real[0]] + [a.der for a in fake[:-1]], fake[-1])
    with pytest.raises(BrokenChainError, match=r"cabundle\[1\]"):
        Verifier().authenticate(data, at=production.at)


def test_self_signed_intermediate_claiming_the_root_as_issuer_is_refused(
    production: Vector,
) -> None:
    real = list(production.document.cabundle)
    root_name, regional_name = _real_subjects(production)[:2]
    fake = issue(
        Spec(
            regional_name,
            path_length=2,
            issuer_name=root_name,
            self_signed=True,
            not_before=production.at - dt.timedelta(days=1),
            not_after=production.at + dt.timedelta(days=1),
        ),
        None,
    )
    data = _with_cabundle(production, [real[0], fake.der, *real[2:]])
    with pytest.raises(BrokenChainError, match="does not verify"):
        Verifier().authenticate(data, at=production.at)


def test_self_signed_intermediate_is_never_a_trust_anchor(production: Vector) -> None:
    # Even offered as cabundle[0], a certificate in the document is not trusted.
    fake = build_chain(aws_shaped_specs(_real_subjects(production)))
    data = _with_cabundle(production, [a.der for a in fake[1:-1]], fake[-1])
    with pytest.raises(UntrustedRootError, match="never trust anchors"):
        Verifier().authenticate(data, at=production.at)


def test_attacker_chain_with_aws_names_is_refused(production: Vector) -> None:
    specs = [
        dataclasses.replace(
            spec,
            not_before=production.at - dt.timedelta(hours=1),
            not_after=production.at + dt.timedelta(hours=2),
        )
        for spec in aws_shaped_specs(_real_subjects(production))
    ]
    attacker = build_chain(specs)
    data = _with_cabundle(production, [a.der for a in attacker[:-1]], attacker[-1])
    with pytest.raises(UntrustedRootError):
        Verifier().authenticate(data, at=production.at)
    # The same chain is internally consistent: trusting its root would accept it.
    Verifier(trusted_roots=(attacker[0].fingerprint,)).authenticate(data, at=production.at)


def test_missing_link_is_refused(production: Vector) -> None:
    real = list(production.document.cabundle)
    data = _with_cabundle(production, [real[0], real[1], real[3]])  # zonal CA removed
    with pytest.raises(BrokenChainError, match=r"expected issuer"):
        Verifier().authenticate(data, at=production.at)


def test_links_in_the_wrong_order_are_refused(production: Vector) -> None:
    real = list(production.document.cabundle)
    data = _with_cabundle(production, [real[0], real[2], real[1], real[3]])
    with pytest.raises(BrokenChainError):
        Verifier().authenticate(data, at=production.at)


def test_genuine_aws_root_is_untrusted_unless_pinned(production: Vector, forged_chain) -> None:
    with pytest.raises(UntrustedRootError):
        Verifier(trusted_roots=(forged_chain[0].fingerprint,)).authenticate(
            production.data, at=production.at
        )


def test_bad_fingerprints_are_refused() -> None:
    with pytest.raises(PolicyError):
        Verifier(trusted_roots=())
    with pytest.raises(PolicyError):
        Verifier(trusted_roots=(b"short",))


def _chain_with(position: int, **changes: Any) -> list[Authority]:
    specs = aws_shaped_specs()
    specs[position] = dataclasses.replace(specs[position], **changes)
    return build_chain(specs)


def _verify(chain: list[Authority], at: dt.datetime = NOW) -> None:
    Verifier(trusted_roots=(chain[0].fingerprint,)).authenticate(document(chain), at=at)


@pytest.mark.parametrize(
    ("position", "changes", "message"),
    [
        (2, {"ca": False}, "expected a CA with basicConstraints cA"),
        (2, {"basic_constraints": False}, "expected a CA with basicConstraints cA"),
        (0, {"ca": False}, "expected a CA with basicConstraints cA"),
        (3, {"usage": LEAF_USAGE}, "expected a CA with keyUsage keyCertSign"),
        (3, {"usage": None}, "keyCertSign"),
        (2, {"path_length": 0}, "pathLenConstraint 0"),
        (1, {"path_length": 1}, "pathLenConstraint 1"),
        (
            4,
            {"usage": x509.KeyUsage(False, True, False, False, False, False, False, False, False)},
            "digitalSignature",
        ),
        (4, {"usage": None}, "digitalSignature"),
        (
            4,
            {
                "extra": (
                    x509.UnrecognizedExtension(
                        x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"
                    ),
                ),
                "extra_critical": True,
            },
            "unknown critical extension",
        ),
    ],
)
def test_ca_rules(position: int, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(BrokenChainError, match=message):
        _verify(_chain_with(position, **changes))


def test_leaf_without_p384_key_is_refused() -> None:
    with pytest.raises(UnsupportedAlgorithmError, match="P-384"):
        _verify(_chain_with(4, curve=ec.SECP256R1()))


def test_forged_chain_is_accepted_with_its_root_pinned(forged_chain) -> None:
    _verify(forged_chain)


@pytest.mark.parametrize(
    "at",
    [NOW + dt.timedelta(days=1, seconds=1), NOW - dt.timedelta(days=1, seconds=1)],
)
def test_validity_at_the_instant(forged_chain, at: dt.datetime) -> None:
    with pytest.raises(CertificateExpiredError, match="expected valid at"):
        _verify(forged_chain, at=at)


def test_validity_boundaries_are_inclusive(forged_chain) -> None:
    _verify(forged_chain, at=NOW + dt.timedelta(days=1))
    _verify(forged_chain, at=NOW - dt.timedelta(days=1))


def test_expired_intermediate_is_named(forged_chain) -> None:
    chain = _chain_with(2, not_after=NOW - dt.timedelta(minutes=1))
    with pytest.raises(CertificateExpiredError, match=r"cabundle\[2\] 'CN=zonal'"):
        _verify(chain)


def test_naive_instant_is_taken_as_utc(forged_chain) -> None:
    _verify(forged_chain, at=NOW.replace(tzinfo=None))


def test_malformed_certificate_der_is_an_encoding_error(forged_chain) -> None:
    payload_chain = list(forged_chain)
    data = document(payload_chain)
    broken = data.replace(
        forged_chain[2].der[:40], b"\x30\x03\x02\x01\x00" + forged_chain[2].der[5:40]
    )
    assert broken != data
    with pytest.raises(DocumentEncodingError, match=r"cabundle\[2\]: certificate DER"):
        Verifier(trusted_roots=(forged_chain[0].fingerprint,)).authenticate(broken, at=NOW)


def test_leaf_directly_under_root_is_accepted_when_constraints_allow() -> None:
    root = issue(Spec(name("root")), None)
    leaf = issue(Spec(name("leaf"), ca=False, usage=LEAF_USAGE), root)
    _verify([root, leaf])


def test_unrelated_document_leaf_is_refused(forged_chain) -> None:
    stranger = build_chain(aws_shaped_specs())
    payload_chain = [*forged_chain[:-1], stranger[-1]]  # leaf from another instance CA
    with pytest.raises(BrokenChainError):
        _verify(payload_chain)
