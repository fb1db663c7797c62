"""CMS envelopes: the sdk-c vectors, our own round trips, and a table of refused shapes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nitrotls.kms.cms import (
    ber,
    build_enveloped,
    oids,
    open_enveloped,
    parse_enveloped,
    subject_key_identifier,
)
from nitrotls.kms.errors import CMSFormatError, KMSError

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --- the sdk-c vectors --------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "chunked"), [("", True), ("_w_ctx", False)])
def test_sdk_c_vectors_parse_to_expected_fields(
    vectors_dir: Path, suffix: str, chunked: bool
) -> None:
    folder = vectors_dir / "kms-cms"
    parts = parse_enveloped((folder / f"input_ber{suffix}.bin").read_bytes())
    assert parts.encrypted_key == (folder / f"encrypted_key_out{suffix}.bin").read_bytes()
    assert parts.iv == (folder / f"iv_out{suffix}.bin").read_bytes()
    assert parts.ciphertext == (folder / f"ciphertext_out{suffix}.bin").read_bytes()
    assert len(parts.subject_key_identifier) == 32
    assert parts.chunked is chunked


def test_sdk_c_vector_does_not_open_with_a_foreign_key(
    vectors_dir: Path, key: rsa.RSAPrivateKey
) -> None:
    data = (vectors_dir / "kms-cms" / "input_ber.bin").read_bytes()
    with pytest.raises(CMSFormatError, match="does not unwrap"):
        open_enveloped(data, key)


def test_built_envelope_has_the_vector_layout(vectors_dir: Path, key: rsa.RSAPrivateKey) -> None:
    """Same bytes as AWS everywhere except the SKI, the wrapped key, the IV and the content."""
    vector = (vectors_dir / "kms-cms" / "input_ber.bin").read_bytes()
    ours = build_enveloped(os.urandom(32), key.public_key())
    assert len(ours) == len(vector)
    skeleton = [(0, 33), (65, 131), (387, 415), (431, 435), (483, 493)]
    for start, end in skeleton:
        assert ours[start:end] == vector[start:end], (start, end)
    primitive = (vectors_dir / "kms-cms" / "input_ber_w_ctx.bin").read_bytes()
    ours = build_enveloped(b"", key.public_key(), chunked=False)
    assert len(ours) == len(primitive)
    assert ours[387:415] == primitive[387:415]
    assert ours[431:433] == primitive[431:433]


# --- our own envelopes --------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 32, 4096])
def test_round_trip(key: rsa.RSAPrivateKey, chunked: bool, size: int) -> None:
    plaintext = os.urandom(size)
    envelope = build_enveloped(plaintext, key.public_key(), chunked=chunked, chunk_size=100)
    opened = open_enveloped(envelope, key)
    assert isinstance(opened, bytearray)
    assert opened == plaintext
    parts = parse_enveloped(envelope)
    assert parts.chunked is chunked
    assert parts.subject_key_identifier == subject_key_identifier(key.public_key())


def test_ski_is_sha256_of_the_spki(key: rsa.RSAPrivateKey) -> None:
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert subject_key_identifier(key.public_key()) == hashlib.sha256(spki).digest()


def test_envelopes_are_fresh(key: rsa.RSAPrivateKey) -> None:
    one = parse_enveloped(build_enveloped(b"same", key.public_key()))
    two = parse_enveloped(build_enveloped(b"same", key.public_key()))
    assert one.iv != two.iv
    assert one.ciphertext != two.ciphertext


def test_a_bytearray_plaintext_is_accepted(key: rsa.RSAPrivateKey) -> None:
    secret = bytearray(b"k" * 32)
    assert open_enveloped(build_enveloped(secret, key.public_key()), key) == secret


def test_other_recipient_cannot_open(key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey) -> None:
    envelope = build_enveloped(b"secret", key.public_key())
    with pytest.raises(CMSFormatError, match="does not unwrap"):
        open_enveloped(envelope, other_key)


def test_cms_errors_are_kms_errors() -> None:
    assert issubclass(CMSFormatError, KMSError)


# --- a hand builder for shapes build_enveloped never makes ----------------------------------------


def seq(*parts: bytes) -> bytes:
    return ber.definite(0x30, b"".join(parts))


def oid(body: bytes) -> bytes:
    return ber.definite(ber.TAG_OID, body)


def octets(value: bytes) -> bytes:
    return ber.definite(ber.TAG_OCTET_STRING, value)


def integer(value: int) -> bytes:
    return ber.definite(ber.TAG_INTEGER, bytes([value]))


NULL = ber.definite(ber.TAG_NULL, b"")
SHA256_ALG = seq(oid(oids.SHA256), NULL)
MGF1_SHA256 = seq(oid(oids.MGF1), SHA256_ALG)
OAEP_PARAMS = seq(ber.definite(0xA0, SHA256_ALG), ber.definite(0xA1, MGF1_SHA256))
SKI = bytes(range(32))


def ktri(
    *,
    version: bytes = integer(2),
    rid: bytes = ber.definite(0x80, SKI),
    algorithm: bytes | None = None,
    encrypted_key: bytes | None = None,
    extra: bytes = b"",
    wrapped: bytes = b"\x00" * 256,
) -> bytes:
    algorithm = seq(oid(oids.RSAES_OAEP), OAEP_PARAMS) if algorithm is None else algorithm
    encrypted_key = octets(wrapped) if encrypted_key is None else encrypted_key
    return seq(version, rid, algorithm, encrypted_key, extra)


def envelope(**changes: Any) -> bytes:
    """A well-formed KMS-shaped envelope, with any named part replaced."""
    parts: dict[str, Any] = {
        "content_type": oid(oids.ENVELOPED_DATA),
        "version": integer(2),
        "before_recipients": b"",
        "recipients": ber.definite(0x31, ktri()),
        "data_type": oid(oids.DATA),
        "cipher": seq(oid(oids.AES256_CBC), octets(b"\x11" * 16)),
        "content": ber.indefinite(0xA0, octets(b"\x22" * 32)),
        "after_content": b"",
        "trailing": b"",
    }
    parts.update(changes)
    content_info = ber.indefinite(0x30, parts["data_type"], parts["cipher"], parts["content"])
    enveloped = ber.indefinite(
        0x30,
        parts["version"],
        parts["before_recipients"],
        parts["recipients"],
        content_info,
        parts["after_content"],
    )
    return (
        ber.indefinite(0x30, parts["content_type"], ber.indefinite(0xA0, enveloped))
        + parts["trailing"]
    )


def test_hand_builder_makes_an_accepted_envelope() -> None:
    parts = parse_enveloped(envelope())
    assert parts.iv == b"\x11" * 16
    assert parts.ciphertext == b"\x22" * 32
    assert parts.subject_key_identifier == SKI


def test_explicit_empty_label_and_absent_null_parameters_are_accepted() -> None:
    empty_label = ber.definite(0xA2, seq(oid(oids.P_SPECIFIED), octets(b"")))
    params = seq(
        ber.definite(0xA0, seq(oid(oids.SHA256))),
        ber.definite(0xA1, seq(oid(oids.MGF1), seq(oid(oids.SHA256)))),
        empty_label,
    )
    algorithm = seq(oid(oids.RSAES_OAEP), params)
    parse_enveloped(envelope(recipients=ber.definite(0x31, ktri(algorithm=algorithm))))


def test_several_chunks_are_joined() -> None:
    content = ber.indefinite(0xA0, octets(b"\x01" * 16), octets(b""), octets(b"\x02" * 16))
    assert parse_enveloped(envelope(content=content)).ciphertext == b"\x01" * 16 + b"\x02" * 16


def test_definite_lengths_are_accepted_too() -> None:
    content = ber.definite(0xA0 | 0x20, octets(b"\x03" * 16))
    assert parse_enveloped(envelope(content=content)).ciphertext == b"\x03" * 16


def oaep(params: bytes) -> bytes:
    return ber.definite(0x31, ktri(algorithm=seq(oid(oids.RSAES_OAEP), params)))


SHA1_ALG = seq(oid(bytes.fromhex("2b0e03021a")), NULL)
SHA384_ALG = seq(oid(bytes.fromhex("608648016503040202")), NULL)
ISSUER_AND_SERIAL = seq(seq(), integer(1))

MUTATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("signedData", {"content_type": oid(bytes.fromhex("2a864886f70d010702"))}, "id-signedData"),
    ("content type not an OID", {"content_type": octets(b"x")}, "expected OBJECT IDENTIFIER"),
    ("enveloped version 0", {"version": integer(0)}, "expected 2, found 0"),
    ("version not an INTEGER", {"version": octets(b"\x02")}, "expected INTEGER"),
    ("huge version", {"version": ber.definite(2, b"\x01" * 40)}, "40-byte integer"),
    ("originatorInfo", {"before_recipients": ber.definite(0xA0, b"")}, "originatorInfo"),
    ("unprotectedAttrs", {"after_content": ber.definite(0xA1, b"")}, "unprotectedAttrs"),
    ("something after content", {"after_content": NULL}, "unexpected NULL"),
    ("two recipients", {"recipients": ber.definite(0x31, ktri() + ktri())}, "found 2"),
    ("no recipients", {"recipients": ber.definite(0x31, b"")}, "found 0"),
    ("recipients in a SEQUENCE", {"recipients": seq(ktri())}, "expected SET"),
    (
        "primitive SET",
        {"recipients": ber.definite(0x11, b"")},
        r"expected SET, found SET \(primitive\)",
    ),
    ("KEK recipient", {"recipients": ber.definite(0x31, ber.definite(0xA2, b""))}, "KEKRecip"),
    ("key agreement", {"recipients": ber.definite(0x31, ber.definite(0xA1, b""))}, "KeyAgree"),
    ("ktri version 0", {"recipients": ber.definite(0x31, ktri(version=integer(0)))}, "found 0"),
    (
        "issuerAndSerialNumber",
        {"recipients": ber.definite(0x31, ktri(rid=ISSUER_AND_SERIAL))},
        "subjectKeyIdentifier",
    ),
    ("empty SKI", {"recipients": ber.definite(0x31, ktri(rid=ber.definite(0x80, b"")))}, "empty"),
    ("ktri extra field", {"recipients": ber.definite(0x31, ktri(extra=NULL))}, "found 5"),
    (
        "PKCS#1 v1.5",
        {
            "recipients": ber.definite(
                0x31, ktri(algorithm=seq(oid(bytes.fromhex("2a864886f70d010101")), NULL))
            )
        },
        "rsaEncryption",
    ),
    ("OAEP defaults (SHA-1)", {"recipients": oaep(seq())}, "expected 2 to 3 elements, found 0"),
    (
        "OAEP with SHA-1",
        {"recipients": oaep(seq(ber.definite(0xA0, SHA1_ALG), ber.definite(0xA1, MGF1_SHA256)))},
        "id-sha1",
    ),
    (
        "MGF1 with SHA-384",
        {
            "recipients": oaep(
                seq(
                    ber.definite(0xA0, SHA256_ALG),
                    ber.definite(0xA1, seq(oid(oids.MGF1), SHA384_ALG)),
                )
            )
        },
        "id-sha384",
    ),
    (
        "mask generator not MGF1",
        {
            "recipients": oaep(
                seq(ber.definite(0xA0, SHA256_ALG), ber.definite(0xA1, seq(oid(oids.SHA256), NULL)))
            )
        },
        "expected id-mgf1",
    ),
    (
        "hash and MGF swapped",
        {"recipients": oaep(seq(ber.definite(0xA1, MGF1_SHA256), ber.definite(0xA0, SHA256_ALG)))},
        r"expected \[0\] constructed",
    ),
    (
        "non-empty OAEP label",
        {
            "recipients": oaep(
                seq(
                    ber.definite(0xA0, SHA256_ALG),
                    ber.definite(0xA1, MGF1_SHA256),
                    ber.definite(0xA2, seq(oid(oids.P_SPECIFIED), octets(b"label"))),
                )
            )
        },
        "empty OAEP label",
    ),
    (
        "NULL parameters with bytes",
        {
            "recipients": oaep(
                seq(
                    ber.definite(0xA0, seq(oid(oids.SHA256), ber.definite(5, b"\x00"))),
                    ber.definite(0xA1, MGF1_SHA256),
                )
            )
        },
        "NULL parameters carry bytes",
    ),
    (
        "empty encrypted key",
        {"recipients": ber.definite(0x31, ktri(encrypted_key=octets(b"")))},
        "encryptedKey is empty",
    ),
    (
        "constructed encrypted key",
        {"recipients": ber.definite(0x31, ktri(encrypted_key=ber.indefinite(4, octets(b"k"))))},
        r"expected OCTET STRING, found OCTET STRING \(constructed\)",
    ),
    ("content type not id-data", {"data_type": oid(oids.ENVELOPED_DATA)}, "expected id-data"),
    (
        "AES-128-CBC",
        {"cipher": seq(oid(bytes.fromhex("608648016503040102")), octets(b"\x11" * 16))},
        "id-aes128-CBC",
    ),
    (
        "AES-256-GCM",
        {"cipher": seq(oid(bytes.fromhex("60864801650304012e")), octets(b"\x11" * 12))},
        "id-aes256-GCM",
    ),
    ("12-byte IV", {"cipher": seq(oid(oids.AES256_CBC), octets(b"\x11" * 12))}, "16-byte IV"),
    ("IV missing", {"cipher": seq(oid(oids.AES256_CBC))}, "expected 2 elements, found 1"),
    ("no encryptedContent", {"content": b""}, "no encryptedContent"),
    ("content with a wrong tag", {"content": ber.definite(0x81, b"\x00" * 16)}, r"\[0\]"),
    ("content of 20 bytes", {"content": ber.definite(0x80, b"\x00" * 20)}, "multiple of 16"),
    ("empty content", {"content": ber.definite(0x80, b"")}, "multiple of 16"),
    ("chunk not an OCTET STRING", {"content": ber.indefinite(0xA0, integer(1))}, "chunk"),
    (
        "nested constructed chunk",
        {"content": ber.indefinite(0xA0, ber.indefinite(4, octets(b"\x00" * 16)))},
        "chunk",
    ),
    ("trailing bytes", {"trailing": b"\x00"}, "trailing bytes"),
    ("trailing element", {"trailing": NULL}, "trailing bytes"),
]


@pytest.mark.parametrize(
    ("changes", "message"), [(c, m) for _, c, m in MUTATIONS], ids=[n for n, _, _ in MUTATIONS]
)
def test_mutations_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(CMSFormatError, match=message):
        parse_enveloped(envelope(**changes))


VALID = envelope()

RAW_MUTATIONS: list[tuple[str, bytes, str]] = [
    ("empty input", b"", "ends at offset 0"),
    ("only EOC", b"\x00\x00", "expected SEQUENCE"),
    ("high tag number", b"\x1f\x81\x00\x00", "high tag number"),
    ("indefinite primitive", b"\x04\x80\x00\x00", "indefinite length on a primitive"),
    ("length past the end", b"\x30\x05\x02\x01\x02", "claims 5 bytes but only 3 remain"),
    ("long length past the end", b"\x04\x82\x01\x00" + b"\x00" * 10, "claims 256 bytes"),
    ("non-minimal short length", b"\x04\x81\x05" + b"\x00" * 5, "non-minimal length"),
    ("leading zero length", b"\x04\x82\x00\x90" + b"\x00" * 0x90, "non-minimal length"),
    ("five length bytes", b"\x04\x85\x00\x00\x00\x00\x01\x00", "at most 4"),
    ("EOC inside a definite length", b"\x30\x02\x00\x00", "end-of-contents at offset 2"),
    ("EOC with content", b"\x30\x80\x00\x01\x00\x00\x00", "carries bytes"),
    ("missing EOC", VALID[:-2], "ends at offset"),
    (
        "indefinite primitive in a parent",
        b"\x30\x03\x04\x80\x00",
        "indefinite length on a primitive",
    ),
    ("child runs past parent", b"\x30\x03\x30\x80\x00\x00", "runs past its parent"),
    ("too deep", b"\x30\x80" * 40 + b"\x00\x00" * 40, "nesting deeper than 16"),
    ("too large", b"\x04\x83\x01\x00\x01" + b"\x00" * 65537, "at most 65536"),
]


@pytest.mark.parametrize(
    ("data", "message"), [(d, m) for _, d, m in RAW_MUTATIONS], ids=[n for n, _, _ in RAW_MUTATIONS]
)
def test_malformed_ber_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(CMSFormatError, match=message):
        parse_enveloped(data)


def test_every_truncation_is_refused(vectors_dir: Path) -> None:
    data = (vectors_dir / "kms-cms" / "input_ber.bin").read_bytes()
    for end in range(len(data)):
        with pytest.raises(CMSFormatError):
            parse_enveloped(data[:end])


# --- decryption-level refusals ------------------------------------------------------------------


def sealed(key: rsa.RSAPrivateKey, padded: bytes, cek: bytes | None = None) -> bytes:
    """An envelope whose CBC plaintext is exactly ``padded`` (no padding added)."""
    cek = os.urandom(32) if cek is None else cek
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(cek.ljust(32, b"\0")), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    wrapped = key.public_key().encrypt(cek, OAEP)
    return envelope(
        recipients=ber.definite(0x31, ktri(wrapped=wrapped)),
        cipher=seq(oid(oids.AES256_CBC), octets(iv)),
        content=ber.definite(0x80, ciphertext),
    )


@pytest.mark.parametrize(
    "padded",
    [
        b"a" * 15 + b"\x00",
        b"a" * 15 + b"\x11",
        b"a" * 15 + b"\xff",
        b"a" * 13 + b"\x02\x03\x03",
        b"a" * 14 + b"\x01\x02",
        b"a" * 16 + b"\x10" * 15 + b"\x0f",
    ],
)
def test_bad_padding_is_refused(key: rsa.RSAPrivateKey, padded: bytes) -> None:
    with pytest.raises(CMSFormatError, match="PKCS#7 padding"):
        open_enveloped(sealed(key, padded), key)


@pytest.mark.parametrize(
    ("padded", "plain"),
    [(b"a" * 15 + b"\x01", b"a" * 15), (b"\x10" * 16, b""), (b"b" * 4 + b"\x0c" * 12, b"bbbb")],
)
def test_good_padding_is_removed(key: rsa.RSAPrivateKey, padded: bytes, plain: bytes) -> None:
    assert open_enveloped(sealed(key, padded), key) == plain


def test_short_content_key_is_refused(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(CMSFormatError, match="32-byte AES key, unwrapped 16"):
        open_enveloped(sealed(key, b"\x10" * 16, cek=os.urandom(16)), key)


def test_altered_wrapped_key_is_refused(key: rsa.RSAPrivateKey) -> None:
    data = bytearray(build_enveloped(b"x", key.public_key()))
    data[200] ^= 1  # inside the 256-byte encryptedKey
    with pytest.raises(CMSFormatError, match="does not unwrap"):
        open_enveloped(bytes(data), key)


def test_content_key_and_padded_buffer_are_wiped(
    key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nitrotls.kms.cms import envelope as module
    from nitrotls.secrets import wipe

    wiped: list[bytearray] = []

    def recording_wipe(buffer: bytearray) -> None:
        wiped.append(buffer)
        wipe(buffer)

    monkeypatch.setattr(module, "wipe", recording_wipe)
    plaintext = os.urandom(40)
    assert open_enveloped(build_enveloped(plaintext, key.public_key()), key) == plaintext
    sizes = sorted(len(buffer) for buffer in wiped)
    assert 32 in sizes  # the content key (opening) and the CEK (building)
    assert 48 + 15 in sizes  # the padded plaintext buffer
    assert all(not any(buffer) for buffer in wiped)


def test_wrong_padding_still_wipes(key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    from nitrotls.kms.cms import envelope as module
    from nitrotls.secrets import wipe

    wiped: list[int] = []
    monkeypatch.setattr(module, "wipe", lambda b: (wiped.append(len(b)), wipe(b)))
    with pytest.raises(CMSFormatError):
        open_enveloped(sealed(key, b"a" * 15 + b"\x00"), key)
    assert 32 in wiped
    assert 16 + 15 in wiped
