"""Build attestation documents and certificate chains with keys the tests control.

Real AWS documents cannot be re-signed, so negative tests that need a valid signature on altered
content (or a chain with a particular flaw) sign with these throwaway authorities instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from nitrotls.attestation.cose import sig_structure

ES384_PROTECTED = b"\xa1\x01\x38\x22"  # {1: -35}
CA_USAGE = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
LEAF_USAGE = x509.KeyUsage(True, True, False, False, False, False, False, False, False)
NOW = dt.datetime(2024, 4, 10, 8, 0, tzinfo=dt.UTC)


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def fingerprint(self) -> bytes:
        return hashlib.sha256(self.der).digest()


@dataclass(frozen=True)
class Spec:
    """How to build one certificate of a chain."""

    subject: x509.Name
    ca: bool = True
    path_length: int | None = None
    usage: x509.KeyUsage | None = CA_USAGE
    curve: ec.EllipticCurve = field(default_factory=ec.SECP384R1)
    not_before: dt.datetime = NOW - dt.timedelta(days=1)
    not_after: dt.datetime = NOW + dt.timedelta(days=1)
    basic_constraints: bool = True
    issuer_name: x509.Name | None = None  # override the issuer name (default: the signer's)
    self_signed: bool = False
    extra: tuple[x509.ExtensionType, ...] = ()
    extra_critical: bool = False


def issue(spec: Spec, signer: Authority | None) -> Authority:
    """A certificate per ``spec`` signed by ``signer`` (or by itself when None/self_signed)."""
    key = ec.generate_private_key(spec.curve)
    signing_key = key if signer is None or spec.self_signed else signer.key
    issuer = spec.issuer_name or (
        spec.subject if signer is None or spec.self_signed else signer.cert.subject
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(spec.subject)
        .issuer_name(issuer)
        .serial_number(x509.random_serial_number())
        .public_key(key.public_key())
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
    )
    if spec.basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=spec.ca, path_length=spec.path_length if spec.ca else None),
            critical=True,
        )
    if spec.usage is not None:
        builder = builder.add_extension(spec.usage, critical=True)
    for extension in spec.extra:
        builder = builder.add_extension(extension, critical=spec.extra_critical)
    return Authority(builder.sign(signing_key, hashes.SHA384()), key)


def aws_shaped_specs(subjects: Sequence[x509.Name] | None = None) -> list[Spec]:
    """Root, regional (pathLen 2), zonal (1), instance (0), leaf: the shape AWS uses."""
    names = list(subjects or [name(n) for n in ("root", "regional", "zonal", "instance", "leaf")])
    return [
        Spec(names[0]),
        Spec(names[1], path_length=2),
        Spec(names[2], path_length=1),
        Spec(names[3], path_length=0),
        Spec(names[4], ca=False, usage=LEAF_USAGE),
    ]


def build_chain(specs: Sequence[Spec]) -> list[Authority]:
    """Issue each spec under the previous one (the first is self-signed)."""
    chain: list[Authority] = []
    for spec in specs:
        chain.append(issue(spec, chain[-1] if chain else None))
    return chain


def payload_map(chain: Sequence[Authority], **overrides: Any) -> dict[str, Any]:
    """An AWS-shaped payload for ``chain`` (root first, leaf last)."""
    payload: dict[str, Any] = {
        "module_id": "i-0123456789abcdef0-enc0123456789abcdef",
        "digest": "SHA384",
        "timestamp": int(NOW.timestamp() * 1000),
        "pcrs": {i: bytes([i + 1]) * 48 for i in range(16)},
        "certificate": chain[-1].der,
        "cabundle": [a.der for a in chain[:-1]],
        "public_key": None,
        "user_data": None,
        "nonce": None,
    }
    payload.update(overrides)
    return payload


def raw_signature(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA384())))
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")


def cose(
    payload: bytes,
    key: ec.EllipticCurvePrivateKey | None,
    *,
    protected: bytes = ES384_PROTECTED,
    unprotected: dict[Any, Any] | None = None,
    tagged: bool = False,
) -> bytes:
    """A COSE_Sign1 over exactly ``payload``; signed by ``key``, or a zero signature if None."""
    signature = raw_signature(key, sig_structure(protected, payload)) if key else bytes(96)
    value: Any = [protected, unprotected or {}, payload, signature]
    if tagged:
        value = cbor2.CBORTag(18, value)
    return bytes(cbor2.dumps(value))


def document(chain: Sequence[Authority], **overrides: Any) -> bytes:
    """A signed document from ``chain`` with an AWS-shaped payload."""
    return cose(bytes(cbor2.dumps(payload_map(chain, **overrides))), chain[-1].key)


def indefinite_map(items: dict[str, Any]) -> bytes:
    """A CBOR map with indefinite length (0xbf ... 0xff), as some encoders produce."""
    body = b"".join(bytes(cbor2.dumps(k)) + bytes(cbor2.dumps(v)) for k, v in items.items())
    return b"\xbf" + body + b"\xff"


def map_with_duplicate(items: dict[str, Any], key: str, value: Any) -> bytes:
    """A definite map holding ``key`` twice (the second time with ``value``)."""
    body = b"".join(bytes(cbor2.dumps(k)) + bytes(cbor2.dumps(v)) for k, v in items.items())
    body += bytes(cbor2.dumps(key)) + bytes(cbor2.dumps(value))
    count = len(items) + 1
    assert count < 24
    return bytes([0xA0 | count]) + body
