"""The object identifiers a KMS envelope uses, DER-encoded for comparison, with names."""

from __future__ import annotations

from nitrotls.kms.cms.ber import encode_oid

ENVELOPED_DATA = encode_oid("1.2.840.113549.1.7.3")
DATA = encode_oid("1.2.840.113549.1.7.1")
RSAES_OAEP = encode_oid("1.2.840.113549.1.1.7")
MGF1 = encode_oid("1.2.840.113549.1.1.8")
P_SPECIFIED = encode_oid("1.2.840.113549.1.1.9")
SHA256 = encode_oid("2.16.840.1.101.3.4.2.1")
AES256_CBC = encode_oid("2.16.840.1.101.3.4.1.42")

NAMES = {
    ENVELOPED_DATA: "id-envelopedData",
    DATA: "id-data",
    RSAES_OAEP: "id-RSAES-OAEP",
    MGF1: "id-mgf1",
    P_SPECIFIED: "id-pSpecified",
    SHA256: "id-sha256",
    AES256_CBC: "id-aes256-CBC",
    encode_oid("1.2.840.113549.1.1.1"): "rsaEncryption (PKCS#1 v1.5)",
    encode_oid("1.3.14.3.2.26"): "id-sha1",
    encode_oid("2.16.840.1.101.3.4.2.2"): "id-sha384",
    encode_oid("2.16.840.1.101.3.4.2.3"): "id-sha512",
    encode_oid("2.16.840.1.101.3.4.1.2"): "id-aes128-CBC",
    encode_oid("2.16.840.1.101.3.4.1.46"): "id-aes256-GCM",
    encode_oid("1.2.840.113549.1.7.2"): "id-signedData",
}


def name(body: bytes) -> str:
    """A readable name for an OID body: its known name, else its dotted form."""
    return NAMES.get(body) or dotted(body)


def dotted(body: bytes) -> str:
    """Dotted decimal of an OID body (best effort: used in error messages only)."""
    arcs: list[int] = []
    value = 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        return "<empty OID>"
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])
