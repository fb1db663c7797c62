"""Inspection output: free-form fields described by what they hold."""

from __future__ import annotations

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.attestation_vectors import Vector
from nitrotls.attestation.summary import certificate_summaries, describe_field, summary


def test_describes_each_kind_of_value() -> None:
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    binding = bytes(cbor2.dumps({"t": "nitrotls/tls/1", "spki": b"\x01" * 48, "bundle": b"\x02"}))
    assert describe_field(None) == "null"
    assert describe_field(spki).startswith("DER public key (EC secp384r1)")
    assert describe_field(binding).startswith("nitrotls binding nitrotls/tls/1: spki=0101")
    assert describe_field(b"hello, world!") == "text 'hello, world!'"
    assert describe_field(b"\x00\x01\x02") == "3 bytes: 000102"
    assert describe_field(bytes(range(200, 256))).endswith("(56 bytes)")
    foreign = bytes(cbor2.dumps({"t": "other/1"}))
    assert describe_field(foreign) == f"{len(foreign)} bytes: {foreign.hex()}"


def test_summary_of_a_real_document(production: Vector) -> None:
    result = summary(production.document)
    assert result["module_id"] == production.entry["module_id"]
    assert result["pcrs"]["0"] == production.entry["pcr0"]
    assert result["debug"] is False
    assert result["user_data"]["description"].startswith('text \'{"total_memory"')
    assert result["nonce"] == {"hex": None, "description": "null"}
    chain = result["chain"]
    assert [c["position"] for c in chain] == [
        "cabundle[0]",
        "cabundle[1]",
        "cabundle[2]",
        "cabundle[3]",
        "certificate",
    ]
    assert chain[0]["subject"] == "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"


def test_unparseable_certificates_are_shown_not_fatal(production: Vector) -> None:
    import dataclasses

    broken = dataclasses.replace(production.document, certificate=b"\x30\x00")
    last = certificate_summaries(broken)[-1]
    assert last.subject.startswith("(unparseable DER") and last.not_after is None
