"""Read the one EnvelopedData shape KMS sends, refusing every other with a precise message.

Accepted (RFC 5652, as in aws-nitro-enclaves-sdk-c's vectors): ContentInfo(id-envelopedData) →
EnvelopedData v2, no originatorInfo, exactly one KeyTransRecipientInfo v2 identified by a
subjectKeyIdentifier, RSAES-OAEP(SHA-256, MGF1-SHA-256, empty label), EncryptedContentInfo
(id-data, AES-256-CBC with a 16-byte IV, content present as a primitive ``[0]`` or a
constructed ``[0]`` of primitive OCTET STRING chunks), no unprotectedAttrs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nitrotls.kms.cms import oids
from nitrotls.kms.cms.ber import (
    CONTEXT,
    TAG_INTEGER,
    TAG_NULL,
    TAG_OCTET_STRING,
    TAG_OID,
    TAG_SEQUENCE,
    TAG_SET,
    UNIVERSAL,
    Node,
    describe,
    parse,
)
from nitrotls.kms.errors import CMSFormatError

BLOCK = 16
_RECIPIENT_CHOICES = {
    1: "KeyAgreeRecipientInfo",
    2: "KEKRecipientInfo",
    3: "PasswordRecipientInfo",
    4: "OtherRecipientInfo",
}


@dataclass(frozen=True)
class EnvelopedParts:
    """The fields of an envelope needed to open it (none of them secret)."""

    subject_key_identifier: bytes
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes
    chunked: bool


def parse_enveloped(ber: bytes) -> EnvelopedParts:
    """Check ``ber`` is exactly the KMS envelope shape and return its fields."""
    root = _expect(parse(ber), UNIVERSAL, TAG_SEQUENCE, True, "ContentInfo")
    content_type, explicit = _fields(root, 2, 2, "ContentInfo")
    _expect_oid(content_type, oids.ENVELOPED_DATA, "ContentInfo.contentType")
    wrapper = _expect(explicit, CONTEXT, 0, True, "ContentInfo.content")
    (enveloped,) = _fields(wrapper, 1, 1, "ContentInfo.content [0]")
    return _enveloped_data(_expect(enveloped, UNIVERSAL, TAG_SEQUENCE, True, "EnvelopedData"))


def _enveloped_data(node: Node) -> EnvelopedParts:
    fields = _fields(node, 3, 5, "EnvelopedData")
    _expect_version(fields[0], "EnvelopedData.version")
    if fields[1].tag_class == CONTEXT and fields[1].tag == 0:
        raise CMSFormatError("EnvelopedData carries originatorInfo; KMS never sends one")
    if len(fields) != 3:
        extra = fields[3]
        if extra.tag_class == CONTEXT and extra.tag == 1:
            raise CMSFormatError("EnvelopedData carries unprotectedAttrs; KMS never sends them")
        raise CMSFormatError(f"EnvelopedData has an unexpected {extra.describe()} after content")
    ski, encrypted_key = _recipient(fields[1])
    iv, ciphertext, chunked = _content(fields[2])
    return EnvelopedParts(ski, encrypted_key, iv, ciphertext, chunked)


def _recipient(node: Node) -> tuple[bytes, bytes]:
    infos = _expect(node, UNIVERSAL, TAG_SET, True, "EnvelopedData.recipientInfos")
    if len(infos.children) != 1:
        raise CMSFormatError(f"expected exactly one RecipientInfo, found {len(infos.children)}")
    info = infos.children[0]
    if info.tag_class == CONTEXT and info.tag in _RECIPIENT_CHOICES:
        raise CMSFormatError(
            f"expected a KeyTransRecipientInfo, found a {_RECIPIENT_CHOICES[info.tag]}"
        )
    info = _expect(info, UNIVERSAL, TAG_SEQUENCE, True, "KeyTransRecipientInfo")
    version, rid, algorithm, key = _fields(info, 4, 4, "KeyTransRecipientInfo")
    _expect_version(version, "KeyTransRecipientInfo.version")
    ski = _expect(rid, CONTEXT, 0, False, "KeyTransRecipientInfo.rid (subjectKeyIdentifier)")
    if not ski.value:
        raise CMSFormatError("KeyTransRecipientInfo.rid: the subjectKeyIdentifier is empty")
    _oaep(_expect(algorithm, UNIVERSAL, TAG_SEQUENCE, True, "keyEncryptionAlgorithm"))
    encrypted = _expect(key, UNIVERSAL, TAG_OCTET_STRING, False, "encryptedKey")
    if not encrypted.value:
        raise CMSFormatError("KeyTransRecipientInfo.encryptedKey is empty")
    return ski.value, encrypted.value


def _oaep(node: Node) -> None:
    oid, params = _fields(node, 2, 2, "keyEncryptionAlgorithm")
    _expect_oid(oid, oids.RSAES_OAEP, "keyEncryptionAlgorithm")
    params = _expect(params, UNIVERSAL, TAG_SEQUENCE, True, "RSAES-OAEP-params")
    fields = _fields(params, 2, 3, "RSAES-OAEP-params")
    hash_alg = _explicit(fields[0], 0, "RSAES-OAEP-params.hashAlgorithm (SHA-256)")
    _digest_sha256(hash_alg, "RSAES-OAEP-params.hashAlgorithm")
    mask = _explicit(fields[1], 1, "RSAES-OAEP-params.maskGenAlgorithm (MGF1)")
    mask = _expect(mask, UNIVERSAL, TAG_SEQUENCE, True, "maskGenAlgorithm")
    mgf_oid, mgf_hash = _fields(mask, 2, 2, "maskGenAlgorithm")
    _expect_oid(mgf_oid, oids.MGF1, "maskGenAlgorithm")
    _digest_sha256(mgf_hash, "MGF1 hash")
    if len(fields) == 3:
        _empty_label(_explicit(fields[2], 2, "RSAES-OAEP-params.pSourceAlgorithm"))


def _digest_sha256(node: Node, where: str) -> None:
    node = _expect(node, UNIVERSAL, TAG_SEQUENCE, True, where)
    fields = _fields(node, 1, 2, where)
    _expect_oid(fields[0], oids.SHA256, where)
    if len(fields) == 2:
        null = _expect(fields[1], UNIVERSAL, TAG_NULL, False, f"{where} parameters")
        if null.value:
            raise CMSFormatError(f"{where}: the NULL parameters carry bytes")


def _empty_label(node: Node) -> None:
    where = "pSourceAlgorithm"
    node = _expect(node, UNIVERSAL, TAG_SEQUENCE, True, where)
    oid, label = _fields(node, 2, 2, where)
    _expect_oid(oid, oids.P_SPECIFIED, where)
    label = _expect(label, UNIVERSAL, TAG_OCTET_STRING, False, "OAEP label")
    if label.value:
        raise CMSFormatError(f"expected an empty OAEP label, found {len(label.value)} bytes")


def _content(node: Node) -> tuple[bytes, bytes, bool]:
    info = _expect(node, UNIVERSAL, TAG_SEQUENCE, True, "EncryptedContentInfo")
    fields = _fields(info, 2, 3, "EncryptedContentInfo")
    _expect_oid(fields[0], oids.DATA, "EncryptedContentInfo.contentType")
    iv = _aes_cbc(fields[1])
    if len(fields) == 2:
        raise CMSFormatError("EncryptedContentInfo has no encryptedContent")
    content = fields[2]
    if content.tag_class != CONTEXT or content.tag != 0:
        raise CMSFormatError(f"expected encryptedContent [0], found {content.describe()}")
    if content.constructed:
        chunks = [
            _expect(chunk, UNIVERSAL, TAG_OCTET_STRING, False, "encryptedContent chunk").value
            for chunk in content.children
        ]
        ciphertext = b"".join(chunks)
    else:
        ciphertext = content.value
    if not ciphertext or len(ciphertext) % BLOCK:
        raise CMSFormatError(
            f"encrypted content is {len(ciphertext)} bytes; AES-CBC needs a non-zero "
            f"multiple of {BLOCK}"
        )
    return iv, ciphertext, content.constructed


def _aes_cbc(node: Node) -> bytes:
    where = "contentEncryptionAlgorithm"
    node = _expect(node, UNIVERSAL, TAG_SEQUENCE, True, where)
    oid, iv = _fields(node, 2, 2, where)
    _expect_oid(oid, oids.AES256_CBC, where)
    iv = _expect(iv, UNIVERSAL, TAG_OCTET_STRING, False, "AES-256-CBC IV")
    if len(iv.value) != BLOCK:
        raise CMSFormatError(f"expected a {BLOCK}-byte IV, found {len(iv.value)} bytes")
    return iv.value


# --- small checks --------------------------------------------------------------------------------


def _expect(node: Node, tag_class: int, tag: int, constructed: bool, where: str) -> Node:
    if (node.tag_class, node.tag, node.constructed) != (tag_class, tag, constructed):
        raise CMSFormatError(
            f"{where}: expected {describe(tag_class, tag, constructed)}, found "
            f"{node.describe()} at offset {node.offset}"
        )
    return node


def _explicit(node: Node, tag: int, where: str) -> Node:
    (inner,) = _fields(_expect(node, CONTEXT, tag, True, where), 1, 1, where)
    return inner


def _fields(node: Node, least: int, most: int, where: str) -> Sequence[Node]:
    count = len(node.children)
    if not least <= count <= most:
        wanted = str(least) if least == most else f"{least} to {most}"
        raise CMSFormatError(f"{where}: expected {wanted} elements, found {count}")
    return node.children


def _expect_oid(node: Node, wanted: bytes, where: str) -> None:
    node = _expect(node, UNIVERSAL, TAG_OID, False, where)
    if node.value != wanted:
        raise CMSFormatError(
            f"{where}: expected {oids.name(wanted)}, found {oids.name(node.value)}"
        )


def _expect_version(node: Node, where: str) -> None:
    node = _expect(node, UNIVERSAL, TAG_INTEGER, False, where)
    if node.value != b"\x02":
        found: object = f"a {len(node.value)}-byte integer"
        if 0 < len(node.value) <= 8:
            found = int.from_bytes(node.value, "big", signed=True)
        raise CMSFormatError(f"{where}: expected 2, found {found}")
