"""The spliced payload and hand-built COSE_Sign1 match cbor2 byte for byte; when attest() blocks."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from nitrotls.attestation import parse_document
from nitrotls.attestation.cose import verify_signature
from nitrotls.attestation.errors import SignatureError
from nitrotls.nsm import DeviceNSM, SimulatedNSM
from nitrotls.nsm.cose import PROTECTED_ES384, PayloadTemplate, encode_payload, sign1

PCRS = {index: bytes([index]) * 48 for index in (3, 0, 16, 1, 2)}
CERTIFICATE = os.urandom(640)
CABUNDLE = (os.urandom(500), os.urandom(700), os.urandom(24), os.urandom(23))
SIZES = (None, 0, 1, 23, 24, 255, 256, 512)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("timestamp", [1, 23, 24, 255, 65535, 65536, 2**32 - 1, 1_780_000_000_123])
def test_template_encodes_exactly_the_payload_map(timestamp: int, size: int | None) -> None:
    value = None if size is None else os.urandom(size)
    template = PayloadTemplate(
        module_id="i-00000000000000000-enc0123", pcrs=PCRS, certificate=CERTIFICATE,
        cabundle=CABUNDLE,
    )  # fmt: skip
    for public_key, user_data, nonce in (
        (value, None, None),
        (None, value, value),
        (b"k", value, b"n"),
    ):
        expected = encode_payload(
            module_id="i-00000000000000000-enc0123", timestamp_ms=timestamp, pcrs=PCRS,
            certificate=CERTIFICATE, cabundle=CABUNDLE, public_key=public_key,
            user_data=user_data, nonce=nonce,
        )  # fmt: skip
        assert template.encode(timestamp, public_key, user_data, nonce) == expected


@pytest.mark.parametrize("payload_size", [0, 23, 24, 255, 256, 4500, 70000])
def test_sign1_is_the_cbor2_cose_sign1_and_verifies(payload_size: int) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    payload = os.urandom(payload_size)
    document = sign1(key, payload)
    protected, unprotected, carried, signature = cbor2.loads(document)
    assert (protected, unprotected, carried, len(signature)) == (PROTECTED_ES384, {}, payload, 96)
    assert document == cbor2.dumps([PROTECTED_ES384, {}, payload, signature])
    to_be_signed = cbor2.dumps(["Signature1", PROTECTED_ES384, b"", payload])
    r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    key.public_key().verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA384()))


def test_a_signed_document_fails_under_another_key() -> None:
    key, other = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    payload = encode_payload(
        module_id="m", timestamp_ms=1, pcrs=PCRS, certificate=CERTIFICATE, cabundle=CABUNDLE,
        public_key=None, user_data=None, nonce=None,
    )  # fmt: skip
    parsed = parse_document(sign1(key, payload))
    verify_signature(parsed, key.public_key())
    with pytest.raises(SignatureError):
        verify_signature(parsed, other.public_key())


def test_simulated_nsm_blocks_only_when_its_leaf_is_due(image_dir: Path, clock: Any) -> None:
    nsm = SimulatedNSM(image_dir, clock=clock)
    assert nsm.blocks  # no signing certificate yet: the first document reads the dev CA
    first = nsm.attest(nonce=b"n" * 32)
    assert not nsm.blocks
    clock.advance(timedelta(hours=2, minutes=55))  # inside the renewal margin
    assert nsm.blocks
    second = nsm.attest(nonce=b"n" * 32)
    assert not nsm.blocks
    certificate = [parse_document(doc).document.certificate for doc in (first, second)]
    assert certificate[0] != certificate[1]  # the spliced template followed the new leaf
    assert DeviceNSM.blocks
