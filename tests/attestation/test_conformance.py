"""Every real AWS document in the manifest: verdict as of its timestamp, now, and tampered."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation.attestation_vectors import Vector
from nitrotls.attestation import (
    AWS_NITRO_ROOT_G1_SHA256,
    CertificateExpiredError,
    DebugEnclaveError,
    Policy,
    SignatureError,
    UserDataMismatchError,
    Verifier,
    parse_document,
)

ANY = Policy(allow_any_measurement=True)


def test_manifest_is_not_empty(vectors: list[Vector]) -> None:
    assert len(vectors) >= 8


def test_root_fingerprint_is_the_published_one(vectors_dir) -> None:
    pem = (vectors_dir / "aws_nitro_root_g1.pem").read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    import hashlib

    assert hashlib.sha256(der).digest() == AWS_NITRO_ROOT_G1_SHA256
    assert AWS_NITRO_ROOT_G1_SHA256.hex().upper() == (
        "641A0321A3E244EFE456463195D606317ED7CDCC3C1756E09893F3C68F79BB5B"
    )


def test_fields_match_the_manifest(vectors: list[Vector]) -> None:
    for vector in vectors:
        entry, document = vector.entry, vector.document
        assert document.module_id == entry["module_id"], vector.name
        assert document.timestamp_ms == entry["timestamp_ms"], vector.name
        assert document.is_debug is entry["debug_mode"], vector.name
        for index in (0, 1, 2, 3, 4, 8):
            assert document.pcrs[index].hex() == entry[f"pcr{index}"], vector.name
        for field in ("public_key", "user_data", "nonce"):
            value = getattr(document, field)
            assert (len(value) if value is not None else None) == entry[f"{field}_len"]


def test_verdict_as_of_document_time(vectors: list[Vector]) -> None:
    verifier = Verifier()
    for vector in vectors:
        expected = vector.entry["expected_default_policy"]
        if expected.startswith("accept"):
            document = verifier.verify(vector.data, ANY, at=vector.at)
            assert document.module_id == vector.entry["module_id"]
        else:
            assert expected.startswith("reject: debug"), expected
            with pytest.raises(DebugEnclaveError):
                verifier.verify(vector.data, ANY, at=vector.at)
            # Genuine all the same: only the policy refuses it.
            assert verifier.authenticate(vector.data, at=vector.at).is_debug


def test_debug_documents_accepted_when_allowed(vectors: list[Vector]) -> None:
    policy = Policy(allow_debug=True, allow_any_measurement=True)
    debug = [v for v in vectors if v.entry["debug_mode"]]
    assert debug
    for vector in debug:
        assert Verifier().verify(vector.data, policy, at=vector.at).is_debug


def test_every_document_is_expired_now(vectors: list[Vector]) -> None:
    verifier = Verifier()
    for vector in vectors:
        verifier.authenticate(vector.data, at=vector.at)  # warm the cache first
        with pytest.raises(CertificateExpiredError, match="expected valid at"):
            verifier.verify(vector.data, ANY)


def _flip(data: bytes, position: int, bit: int = 0) -> bytes:
    mutated = bytearray(data)
    mutated[position] ^= 1 << bit
    return bytes(mutated)


def test_one_bit_flip_in_signature_is_a_signature_error(vectors: list[Vector]) -> None:
    verifier = Verifier()
    for vector in vectors:
        for position in (len(vector.data) - 1, len(vector.data) - 96, len(vector.data) - 50):
            tampered = _flip(vector.data, position, bit=3)
            with pytest.raises(SignatureError):
                verifier.authenticate(tampered, at=vector.at)


def test_one_bit_flip_in_a_pcr_is_a_signature_error(vectors: list[Vector]) -> None:
    verifier = Verifier()
    for vector in vectors:
        pcr4 = vector.document.pcrs[4]
        position = vector.data.index(pcr4) + 7
        tampered = _flip(vector.data, position)
        parsed = parse_document(tampered)  # still well formed ...
        assert parsed.document.pcrs[4] != pcr4
        with pytest.raises(SignatureError):  # ... but no longer what AWS signed
            verifier.authenticate(tampered, at=vector.at)


def test_pcr_edited_after_signing_is_a_signature_error(production: Vector) -> None:
    pcr0 = production.document.pcrs[0]
    replacement = bytes(48 - 1) + b"\x01"
    tampered = production.data.replace(pcr0, replacement)
    assert parse_document(tampered).document.pcrs[0] == replacement
    with pytest.raises(SignatureError):
        Verifier().verify(tampered, ANY, at=production.at)


def test_evervault_user_data_is_the_certificate_spki(vectors_dir, debug_vector: Vector) -> None:
    cert = x509.load_der_x509_certificate((vectors_dir / "docs/valid-certificate.der").read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    policy = Policy(allow_debug=True, allow_any_measurement=True, user_data=spki)
    document = Verifier().verify(debug_vector.data, policy, at=debug_vector.at)
    assert document.user_data == spki
    other = Policy(allow_debug=True, allow_any_measurement=True, user_data=spki[:-1] + b"\x00")
    with pytest.raises(UserDataMismatchError):
        Verifier().verify(debug_vector.data, other, at=debug_vector.at)
