"""Bundle v1 encoding: one canonical form, strictly decoded."""

from __future__ import annotations

import contextlib
import hashlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nitrotls.bundle import (
    BINDING_TYPE,
    Bundle,
    BundleFormatError,
    SealedKey,
    UnsupportedVersionError,
    WrappedDataKey,
    decode,
)
from nitrotls.cbor import deterministic_dumps


def sample(**changes: object) -> Bundle:
    fields: dict[str, object] = {
        "bundle_id": bytes(range(16)),
        "seq": 7,
        "name": "example.test",
        "created_ms": 1_700_000_000_000,
        "chain": (b"leaf-der", b"intermediate-der"),
        "key": SealedKey(iv=b"\x01" * 12, ct=b"\x02" * 48),
        "dek": WrappedDataKey("alias/nitrotls", b"\x03" * 100, {"nitrotls:name": "example.test"}),
        "gen": b"\x84document",
    }
    fields.update(changes)
    return Bundle(**fields)  # type: ignore[arg-type]


def as_map(bundle: Bundle) -> dict[str, object]:
    value = cbor2.loads(bundle.encode())
    assert isinstance(value, dict)
    return value


def test_round_trip_is_exact() -> None:
    bundle = sample()
    raw = bundle.encode()
    assert decode(raw) == bundle
    assert decode(raw).encode() == raw


def test_encoding_is_the_deterministic_map_of_the_architecture() -> None:
    bundle = sample()
    expected = deterministic_dumps(
        {
            "v": 1,
            "id": bytes(range(16)),
            "seq": 7,
            "name": "example.test",
            "created": 1_700_000_000_000,
            "chain": [b"leaf-der", b"intermediate-der"],
            "key": {"alg": "A256GCM", "iv": b"\x01" * 12, "ct": b"\x02" * 48},
            "dek": {
                "kms_key_id": "alias/nitrotls",
                "blob": b"\x03" * 100,
                "context": {"nitrotls:name": "example.test"},
            },
            "gen": b"\x84document",
        }
    )
    assert bundle.encode() == expected


def test_binding_bytes_leave_out_gen_and_user_data_hashes_them() -> None:
    bundle = sample()
    fields = as_map(bundle)
    del fields["gen"]
    assert bundle.binding_bytes() == deterministic_dumps(fields)
    assert sample(gen=b"\x84other").binding_bytes() == bundle.binding_bytes()
    assert cbor2.loads(bundle.binding_user_data()) == {
        "t": BINDING_TYPE,
        "h": hashlib.sha384(bundle.binding_bytes()).digest(),
    }
    assert sample(seq=8).binding_user_data() != bundle.binding_user_data()


def test_unbound_bundle_has_no_encoding() -> None:
    with pytest.raises(BundleFormatError, match="bind"):
        sample(gen=None).encode()


def reencoded(**changes: object) -> bytes:
    fields = as_map(sample())
    for key, value in changes.items():
        if value is KeyError:
            del fields[key]
        else:
            fields[key] = value
    return deterministic_dumps(fields)


def test_unknown_version_is_refused_as_such() -> None:
    with pytest.raises(UnsupportedVersionError, match="version 2"):
        decode(reencoded(v=2))
    with pytest.raises(BundleFormatError, match="version"):
        decode(reencoded(v=KeyError))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"extra": 1}, "unknown field"),
        ({"gen": KeyError}, "lacks field"),
        ({"chain": KeyError}, "lacks field"),
        ({"seq": True}, "seq must be int"),
        ({"seq": -1}, "seq must be an unsigned"),
        ({"seq": 2**64}, "seq must be an unsigned"),
        ({"id": b"short"}, "id must be 16 bytes"),
        ({"id": "text"}, "id must be bytes"),
        ({"name": "../etc"}, "bundle name"),
        ({"name": ""}, "bundle name"),
        ({"chain": []}, "1-8 certificates"),
        ({"chain": [b"x"] * 9}, "1-8 certificates"),
        ({"chain": ["text"]}, r"chain\[0\] must be bytes"),
        ({"chain": [b"x" * 20000]}, r"chain\[0\] must be 1-16384 bytes"),
        ({"key": {"alg": "A128GCM", "iv": b"\x01" * 12, "ct": b"\x02" * 48}}, "key.alg"),
        ({"key": {"alg": "A256GCM", "iv": b"\x01" * 11, "ct": b"\x02" * 48}}, "key.iv"),
        ({"key": {"alg": "A256GCM", "iv": b"\x01" * 12, "ct": b"\x02" * 16}}, "key.ct"),
        (
            {"key": {"alg": "A256GCM", "iv": b"\x01" * 12, "ct": b"\x02" * 48, "aad": b""}},
            "key has unknown field",
        ),
        ({"key": {"alg": "A256GCM", "iv": b"\x01" * 12}}, "key lacks field"),
        ({"dek": {"kms_key_id": "k", "blob": b"b"}}, "dek lacks field"),
        ({"dek": {"kms_key_id": "k", "blob": b"b", "context": {"a": 1}}}, "text to text"),
        ({"dek": {"kms_key_id": "k", "blob": b"b", "context": {}}}, "1-16 entries"),
        ({"dek": {"kms_key_id": "", "blob": b"b", "context": {"a": "b"}}}, "kms_key_id"),
        ({"dek": {"kms_key_id": "k", "blob": b"", "context": {"a": "b"}}}, "dek.blob"),
        ({"gen": b""}, "gen must be"),
        ({"created": "yesterday"}, "created must be int"),
    ],
)
def test_malformed_fields_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(BundleFormatError, match=message):
        decode(reencoded(**changes))


def test_non_deterministic_encodings_are_refused() -> None:
    raw = sample().encode()
    with pytest.raises(BundleFormatError, match="deterministic"):
        decode(raw + b"\x00")  # trailing bytes
    fields = as_map(sample())
    # Same content, keys in insertion order rather than canonical order.
    unsorted = cbor2.dumps(dict(sorted(fields.items(), reverse=True)))
    assert unsorted != raw
    with pytest.raises(BundleFormatError, match="deterministic"):
        decode(unsorted)
    # An integer in a longer head than needed (seq 7 as a one-byte-argument uint).
    longer = raw.replace(b"\x63seq\x07", b"\x63seq\x18\x07")
    assert longer != raw
    with pytest.raises(BundleFormatError, match="deterministic"):
        decode(longer)


def test_duplicate_keys_are_refused() -> None:
    raw = sample().encode()
    # Turn the 9-entry map into 10 entries with a second "seq".
    assert raw[0] == 0xA9
    duplicated = b"\xaa" + raw[1:] + b"\x63seq\x08"
    with pytest.raises(BundleFormatError):
        decode(duplicated)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00", b"\x80", b"\xa0", b"\xff", b"\xa1\x61v\xf5", b"\x81" * 1000, b"\xa1\x61v\x01"],
)
def test_garbage_is_a_format_error(raw: bytes) -> None:
    with pytest.raises(BundleFormatError):
        decode(raw)


def test_oversized_input_is_refused_before_parsing() -> None:
    with pytest.raises(BundleFormatError, match="limit"):
        decode(b"\xa0" * (256 * 1024 + 1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_escape_as_other_errors(raw: bytes) -> None:
    with contextlib.suppress(BundleFormatError):
        decode(raw)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(sample().encode()) - 1), st.integers(1, 255))
def test_single_byte_corruption_never_escapes_as_other_errors(index: int, delta: int) -> None:
    raw = bytearray(sample().encode())
    raw[index] = (raw[index] + delta) % 256
    try:
        bundle = decode(bytes(raw))
    except BundleFormatError:
        return
    assert bundle.encode() == bytes(raw)  # whatever decodes is canonical
