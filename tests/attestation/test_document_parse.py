"""Strict parsing: COSE shape, CBOR hygiene, and AWS's field syntax rules."""

from __future__ import annotations

import base64
from typing import Any

import cbor2
import pytest

from attestation.attestation_forge import (
    cose,
    document,
    indefinite_map,
    map_with_duplicate,
    payload_map,
)
from attestation.attestation_vectors import Vector
from nitrotls.attestation import (
    DocumentEncodingError,
    NotAnEnclaveDocumentError,
    Policy,
    SignatureError,
    UnsupportedAlgorithmError,
    Verifier,
    parse_document,
    unwrap_document,
)
from nitrotls.attestation.document import MAX_DOCUMENT_BYTES


def _unsigned(payload: dict[str, Any], **kwargs: Any) -> bytes:
    """A document with ``payload`` and a zero signature: parsing never checks the signature."""
    return cose(bytes(cbor2.dumps(payload)), None, **kwargs)


def test_tagged_and_untagged_documents_both_verify(production: Vector) -> None:
    tagged = b"\xd2" + production.data
    parsed = parse_document(tagged)
    assert parsed.payload == parse_document(production.data).payload
    Verifier().authenticate(tagged, at=production.at)


def test_other_outer_tags_are_refused(production: Vector) -> None:
    with pytest.raises(DocumentEncodingError, match="tag"):
        parse_document(b"\xd1" + production.data)  # 17 = COSE_Mac0


def test_indefinite_length_payload_verifies_over_exact_bytes(forged_chain, forged_verifier) -> None:
    payload = indefinite_map(payload_map(forged_chain))
    data = cose(payload, forged_chain[-1].key)
    assert parse_document(data).payload == payload
    forged_verifier.verify(data, Policy(allow_any_measurement=True), at=_at())


def test_signature_is_over_received_bytes_not_a_reencoding(forged_chain, forged_verifier) -> None:
    # Sign the definite encoding, ship the same map indefinite: same content, other bytes.
    signed = cose(bytes(cbor2.dumps(payload_map(forged_chain))), forged_chain[-1].key)
    signature = cbor2.loads(signed)[3]
    shipped = bytes(
        cbor2.dumps([b"\xa1\x01\x38\x22", {}, indefinite_map(payload_map(forged_chain)), signature])
    )
    with pytest.raises(SignatureError):
        forged_verifier.authenticate(shipped, at=_at())


def test_optional_fields_may_be_absent_or_null(forged_chain, forged_verifier) -> None:
    payload = payload_map(forged_chain)
    for field in ("public_key", "user_data", "nonce"):
        del payload[field]
    data = cose(bytes(cbor2.dumps(payload)), forged_chain[-1].key)
    parsed = forged_verifier.authenticate(data, at=_at())
    assert (parsed.public_key, parsed.user_data, parsed.nonce) == (None, None, None)


def test_trailing_bytes_are_refused(production: Vector) -> None:
    with pytest.raises(DocumentEncodingError, match="trailing"):
        parse_document(production.data + b"\x00")


def test_trailing_bytes_inside_the_payload_are_refused(forged_chain) -> None:
    payload = bytes(cbor2.dumps(payload_map(forged_chain))) + b"\xf6"
    with pytest.raises(DocumentEncodingError, match=r"payload.*trailing"):
        parse_document(cose(payload, forged_chain[-1].key))


@pytest.mark.parametrize("keep", [0, 1, 2, 5, 100, 1000, -97, -1])
def test_truncated_documents_are_refused(production: Vector, keep: int) -> None:
    with pytest.raises(DocumentEncodingError):
        parse_document(production.data[:keep])


def test_oversized_documents_are_refused(forged_chain) -> None:
    huge = payload_map(forged_chain, user_data=b"x" * 1024)
    huge["cabundle"] = huge["cabundle"] * 10
    data = _unsigned(huge)
    assert len(data) > MAX_DOCUMENT_BYTES
    with pytest.raises(DocumentEncodingError, match="at most"):
        parse_document(data)


def test_huge_length_claims_do_not_allocate(production: Vector) -> None:
    claim = b"\x84\x5b\xff\xff\xff\xff\xff\xff\xff\xf0" + b"\x00" * 16
    with pytest.raises(DocumentEncodingError):
        parse_document(claim)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(DocumentEncodingError):
        parse_document(b"\x81" * 5000)


def test_duplicate_payload_keys_are_refused(forged_chain) -> None:
    payload = payload_map(forged_chain)
    data = cose(map_with_duplicate(payload, "nonce", b"\x01" * 16), forged_chain[-1].key)
    with pytest.raises(DocumentEncodingError, match=r"[Dd]uplicate"):
        parse_document(data)


def test_duplicate_pcr_indices_are_refused(forged_chain) -> None:
    payload = payload_map(forged_chain)
    pcrs = b"\xa2" + b"\x00\x58\x30" + bytes(48) + b"\x00\x58\x30" + b"\x01" * 48
    encoded = map_with_duplicate({k: v for k, v in payload.items() if k != "pcrs"}, "pcrs", 0)
    encoded = encoded.replace(
        bytes(cbor2.dumps("pcrs")) + b"\x00", bytes(cbor2.dumps("pcrs")) + pcrs
    )
    with pytest.raises(DocumentEncodingError, match=r"[Dd]uplicate"):
        parse_document(cose(encoded, None))


def test_duplicate_keys_in_protected_header_are_refused(forged_chain) -> None:
    payload = bytes(cbor2.dumps(payload_map(forged_chain)))
    with pytest.raises(DocumentEncodingError, match=r"[Dd]uplicate"):
        parse_document(cose(payload, None, protected=b"\xa2\x01\x38\x22\x01\x38\x22"))


@pytest.mark.parametrize(
    ("protected", "found"),
    [(b"\xa1\x01\x26", "ES256"), (b"\xa1\x01\x38\x23", "ES512"), (b"", "None"), (b"\xa0", "None")],
)
def test_algorithms_other_than_es384_are_refused(forged_chain, protected, found) -> None:
    payload = bytes(cbor2.dumps(payload_map(forged_chain)))
    data = cose(payload, forged_chain[-1].key, protected=protected)
    with pytest.raises(UnsupportedAlgorithmError, match=f"expected alg ES384.*found {found}"):
        Verifier().authenticate(data)


def test_algorithm_in_unprotected_header_is_refused(forged_chain) -> None:
    payload = bytes(cbor2.dumps(payload_map(forged_chain)))
    with pytest.raises(DocumentEncodingError, match="protected header"):
        parse_document(cose(payload, None, unprotected={1: -35}))


def test_nitrotpm_documents_are_not_enclave_documents(forged_chain) -> None:
    payload = payload_map(forged_chain)
    payload["nitrotpm_pcrs"] = payload.pop("pcrs")
    with pytest.raises(NotAnEnclaveDocumentError, match="NitroTPM"):
        parse_document(_unsigned(payload))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"module_id": ""}, "module_id"),
        ({"module_id": b"i-0"}, "module_id"),
        ({"timestamp": -1}, "timestamp"),
        ({"timestamp": 0}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"timestamp": 2**63}, "timestamp"),
        ({"pcrs": {}}, "pcrs"),
        ({"pcrs": {i: bytes(48) for i in range(33)}}, "pcrs"),
        ({"pcrs": {32: bytes(48)}}, "indices"),
        ({"pcrs": {-1: bytes(48)}}, "indices"),
        ({"pcrs": {"0": bytes(48)}}, "indices"),
        ({"pcrs": {0: bytes(47)}}, "PCR0"),
        ({"pcrs": {0: "00" * 48}}, "PCR0"),
        ({"cabundle": []}, "cabundle"),
        ({"cabundle": [b""]}, "cabundle"),
        ({"cabundle": [b"x" * 1025]}, "cabundle"),
        ({"certificate": b""}, "certificate"),
        ({"certificate": None}, "certificate"),
        ({"public_key": b""}, "public_key"),
        ({"public_key": b"k" * 1025}, "public_key"),
        ({"user_data": b"u" * 1025}, "user_data"),
        ({"nonce": b"n" * 1025}, "nonce"),
        ({"nonce": "text"}, "nonce"),
        ({"extra": 1}, "unexpected key"),
    ],
)
def test_field_syntax(forged_chain, change: dict[str, Any], message: str) -> None:
    with pytest.raises(DocumentEncodingError, match=message):
        parse_document(_unsigned(payload_map(forged_chain, **change)))


@pytest.mark.parametrize("field", ["module_id", "digest", "timestamp", "pcrs", "certificate"])
def test_required_fields(forged_chain, field: str) -> None:
    payload = payload_map(forged_chain)
    del payload[field]
    with pytest.raises(DocumentEncodingError, match=f"missing required field '{field}'"):
        parse_document(_unsigned(payload))


def test_digest_other_than_sha384_is_refused(forged_chain) -> None:
    with pytest.raises(UnsupportedAlgorithmError, match="SHA384"):
        parse_document(_unsigned(payload_map(forged_chain, digest="SHA256")))


def test_maximum_field_sizes_are_accepted(forged_chain) -> None:
    payload = payload_map(
        forged_chain, public_key=b"k" * 1024, user_data=b"u" * 1024, nonce=b"n" * 1024
    )
    parsed = parse_document(_unsigned(payload)).document
    assert len(parsed.public_key or b"") == len(parsed.nonce or b"") == 1024


@pytest.mark.parametrize("tagged_value", [b"\xc2\x46\x01\x8e\xc5\x4a\xb2\x40", b"\xd9\xd9\xf7\x00"])
def test_semantic_tags_inside_the_payload_are_refused(forged_chain, tagged_value) -> None:
    # timestamp as a tagged bignum, or behind the self-describe tag: not AWS's encoding.
    payload = bytes(cbor2.dumps(payload_map(forged_chain, timestamp=1234567)))
    edited = payload.replace(
        bytes(cbor2.dumps("timestamp")) + b"\x1a\x00\x12\xd6\x87",
        bytes(cbor2.dumps("timestamp")) + tagged_value,
    )
    assert edited != payload
    with pytest.raises(DocumentEncodingError):
        parse_document(cose(edited, None))


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x00",
        b"\xa0",
        b"\x83\x40\xa0\x40",
        b"\x84\x44\xa1\x01\x38\x22\xa0\x40\x40",
        "text",
        5,
    ],
)
def test_not_a_cose_sign1(value: Any) -> None:
    with pytest.raises(DocumentEncodingError):
        parse_document(value)


def test_wrong_signature_length_is_refused(production: Vector) -> None:
    parts = cbor2.loads(production.data)
    parts[3] = parts[3][:64]
    with pytest.raises(DocumentEncodingError, match="96-byte"):
        parse_document(bytes(cbor2.dumps(parts)))


def test_payload_must_be_a_map(forged_chain) -> None:
    with pytest.raises(DocumentEncodingError, match="payload: expected a map"):
        parse_document(cose(bytes(cbor2.dumps([1, 2])), None))


def test_document_record_is_read_only(production: Vector) -> None:
    parsed = parse_document(production.data).document
    with pytest.raises(TypeError):
        parsed.pcrs[0] = b""  # type: ignore[index]
    with pytest.raises(AttributeError):
        parsed.module_id = "other"  # type: ignore[misc]


def test_unwrap_accepts_raw_base64_urlsafe_and_hex(production: Vector) -> None:
    raw = production.data
    assert unwrap_document(raw) == raw
    assert unwrap_document(base64.b64encode(raw) + b"\n") == raw
    assert unwrap_document(base64.urlsafe_b64encode(raw).rstrip(b"=")) == raw
    assert unwrap_document(raw.hex().encode()) == raw
    wrapped = base64.encodebytes(raw)  # 76-column lines
    assert unwrap_document(wrapped) == raw
    assert unwrap_document(b"not base64 !") == b"not base64 !"


def test_forged_document_helper_round_trips(forged_chain, forged_verifier) -> None:
    data = document(forged_chain, nonce=b"\x07" * 32)
    assert forged_verifier.authenticate(data, at=_at()).nonce == b"\x07" * 32


def _at():
    from attestation.attestation_forge import NOW

    return NOW
