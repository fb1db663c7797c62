"""The per-request shortcuts of the local KMS, each held equal to the general form it replaces.

Decrypt with a Recipient is the server's hot path, so a few steps there are done by hand (a
request id, the response head, the context's CBOR, strict base64, the recipient key's encoding,
the document's age). Every one must give exactly what the general code gives, on any input.
"""

from __future__ import annotations

import base64
import binascii
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from nitrotls.attestation.document import parse_document
from nitrotls.cbor import deterministic_dumps
from nitrotls.kms.cms import build_enveloped, parse_enveloped, subject_key_identifier
from nitrotls.kms.local import blob, connection, fields, http11
from nitrotls.kms.local.connection import Connection, Hub
from nitrotls.kms.local.errors import ServiceError
from nitrotls.kms.local.recipient import (
    RecipientChecker,
    VerifiedRecipient,
    _frozen,
    canonical_spki,
)
from nitrotls.nsm import SimulatedNSM, trusted_verifier

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SPKI = KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
RSA_ALGORITHM_WITH_NULL = bytes.fromhex("300d06092a864886f70d0101010500")
RSA_ALGORITHM_WITHOUT_NULL = bytes.fromhex("300b06092a864886f70d010101")


# -- the response -------------------------------------------------------------------------------


@given(st.integers(0, 2**128 - 1))
def test_request_id_is_the_uuid4_text_of_its_bits(bits: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(connection, "getrandbits", lambda _: bits)
        assert connection.request_id() == str(uuid.UUID(int=bits, version=4))


@pytest.mark.parametrize("status", [200, 400, 503])
@pytest.mark.parametrize("close", [False, True])
def test_response_is_what_the_general_writer_makes(
    status: int, close: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "request_id", lambda: "1b4e28ba-2fa1-41d2-883f-0016d3cca427")
    body = b'{"KeyId": "k"}'
    general = http11.response(
        status,
        body,
        {
            "Server": "nitrotls-kms",
            "Content-Type": "application/x-amz-json-1.1",
            "x-amzn-RequestId": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
        },
        close=close,
    )
    assert Connection._response(status, body, close=close) == general
    assert general.startswith(f"HTTP/1.1 {status} ".encode())
    assert general.endswith(b"\r\n\r\n" + body)
    assert (b"\r\nConnection: close\r\n" in general) is close


class _Answer:
    status = 200
    body = b"{}"


class _Echo:
    """A service that records each request body it is handed."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def handle(self, request: object) -> _Answer:
        self.bodies.append(request.body)  # type: ignore[attr-defined]
        return _Answer()


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def _request(body: bytes) -> bytes:
    head = f"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=5), st.integers(1, 64))
def test_bodies_are_cut_exactly_however_they_arrive(bodies: list[bytes], size: int) -> None:
    """One request per read (the body taken whole) or many per read and split anywhere (the
    body cut from a longer buffer): every body comes out as sent, in order."""
    service = _Echo()
    hub = Hub(service, request_timeout=30, max_request_bytes=1 << 16, max_connections=4)  # type: ignore[arg-type]
    link = hub.protocol()
    transport = _Transport()
    link.connection_made(transport)  # type: ignore[arg-type]
    stream = b"".join(_request(body) for body in bodies)
    for start in range(0, len(stream), size):
        link.data_received(stream[start : start + size])
    assert service.bodies == bodies
    assert len(transport.written) == len(bodies)


# -- request members ----------------------------------------------------------------------------

BASE64_ISH = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _outcome(decode: object, text: str) -> bytes | str:
    try:
        return decode(text)  # type: ignore[operator, no-any-return]
    except (binascii.Error, ValueError):
        return "refused"


@settings(max_examples=500)
@given(
    st.one_of(
        BASE64_ISH,
        st.binary(max_size=64).map(lambda data: base64.b64encode(data).decode()),
        st.text(alphabet="QUJD=\n\r \t-_é\x00", max_size=12),
        st.text(max_size=12),
    )
)
def test_base64_decodes_and_refuses_as_the_standard_library(text: str) -> None:
    expected = _outcome(lambda value: base64.b64decode(value, validate=True), text)
    assert _outcome(fields.decode_base64, text) == expected


@given(st.binary(max_size=300))
def test_base64_encodes_as_the_standard_library(data: bytes) -> None:
    assert fields.encode_base64(data) == base64.b64encode(data).decode()
    assert fields.encode_base64(bytearray(data)) == base64.b64encode(data).decode()


def test_a_bad_document_is_still_a_validation_error() -> None:
    with pytest.raises(ServiceError) as caught:
        fields.blob({"Blob": "QQ=QQ"}, "Blob")
    assert caught.value.code == "ValidationException"
    assert fields.blob({"Blob": "QUJD"}, "Blob") == b"ABC"


CONTEXT_TEXT = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="ab", min_size=20, max_size=300),  # lengths around 24 and 256
    st.text(alphabet="é\u20ac\U0001f600", max_size=100),
)


@given(st.dictionaries(CONTEXT_TEXT, CONTEXT_TEXT, max_size=6))
def test_context_encoding_is_deterministic_cbor(context: dict[str, str]) -> None:
    assert blob.encode_context(context) == deterministic_dumps(dict(context))


def test_context_of_other_types_takes_the_general_encoder() -> None:
    odd = {"n": 1, "b": b"x"}
    assert blob.encode_context(odd) == deterministic_dumps(odd)  # type: ignore[arg-type]
    assert blob.encode_context({"k": "v" * 70000}) == deterministic_dumps({"k": "v" * 70000})


@given(st.binary(min_size=16, max_size=16))
def test_blob_key_id_is_the_uuid_text(raw: bytes) -> None:
    data = blob.MAGIC + bytes([blob.VERSION]) + raw + bytes(blob.IV_LEN + blob.TAG_LEN)
    assert blob.parse(data).key_id == str(uuid.UUID(bytes=raw))


# -- the Recipient ------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_canonical_spki_is_what_public_bytes_writes(bits: int) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert canonical_spki(der) == der


def test_spki_without_null_parameters_is_encoded_again() -> None:
    """The loader accepts rsaEncryption without its NULL; re-encoding adds it, so those bytes
    cannot stand for the key's encoding and the envelope takes the general path."""
    inner = SPKI[4:].replace(RSA_ALGORITHM_WITH_NULL, RSA_ALGORITHM_WITHOUT_NULL, 1)
    variant = b"\x30\x82" + len(inner).to_bytes(2, "big") + inner
    key = load_der_public_key(variant)
    assert key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == SPKI
    assert canonical_spki(variant) is None
    assert canonical_spki(None) is None


def test_envelope_names_the_same_recipient_either_way() -> None:
    public = KEY.public_key()
    given_spki = parse_enveloped(build_enveloped(b"k" * 32, public, spki=SPKI))
    encoded = parse_enveloped(build_enveloped(b"k" * 32, public))
    expected = subject_key_identifier(public)
    assert given_spki.subject_key_identifier == encoded.subject_key_identifier == expected


def test_audited_pcrs_are_the_defined_ones_and_any_non_zero() -> None:
    pcrs = {index: bytes(48) for index in range(16)}
    pcrs[9] = bytes(47) + b"\x01"
    pcrs[10] = b"\x01" + bytes(47)
    pcrs[2] = b"\x07" * 48
    recipient = VerifiedRecipient(KEY.public_key(), pcrs, "module")
    assert sorted(recipient.audited_pcrs()) == [0, 1, 2, 3, 4, 8, 9, 10]
    assert recipient.audited_pcrs()[9] == pcrs[9]


@pytest.fixture
def document(tmp_path: Path) -> bytes:
    """A document from the dev CA of this test's data directory (which the verifier trusts)."""
    image = tmp_path / "main.img"
    image.write_text("fast paths image\n")
    # The certificates are made now; the document is signed an hour ahead, so that it can be
    # checked as of times before it was signed while its certificates are valid.
    ahead = [timedelta(0)]
    nsm = SimulatedNSM(image, clock=lambda: datetime.now(UTC) + ahead[0])
    nsm.attest()
    ahead[0] = timedelta(hours=1)
    return nsm.attest(public_key=SPKI)


@pytest.mark.parametrize(
    ("offset", "refused"),
    [
        (timedelta(seconds=60), ""),
        (timedelta(seconds=60, microseconds=1), "is 60 s old; this server accepts documents up"),
        (timedelta(seconds=61, microseconds=500), "is 61 s old"),
        (timedelta(0), ""),
        (-timedelta(minutes=5), ""),
        (-timedelta(minutes=5, microseconds=1), "dated in the future"),
    ],
)
def test_document_age_limits_hold_to_the_microsecond(
    document: bytes, offset: timedelta, refused: str
) -> None:
    checker = RecipientChecker(trusted_verifier(True), timedelta(seconds=60))
    signed = parse_document(document).document.timestamp
    if not refused:
        found = checker.check(document, now=signed + offset)
        assert found.spki == SPKI
        return
    with pytest.raises(ServiceError, match=refused) as caught:
        checker.check(document, now=signed + offset)
    assert caught.value.code == "ValidationException"


def test_random_request_ids_are_version_4() -> None:
    random.seed(7)
    made = {connection.request_id() for _ in range(100)}
    assert len(made) == 100
    assert all(uuid.UUID(text).version == 4 for text in made)


def test_pcrs_are_kept_read_only() -> None:
    """A parsed document's PCRs (a read-only proxy of the parser's own) are taken as they are;
    any other map is copied, so a later change to it cannot reach the recipient."""
    proxy = MappingProxyType({0: bytes(48)})
    assert _frozen(proxy) is proxy
    plain = {0: bytes(48)}
    frozen = _frozen(plain)
    plain[1] = b"\x01" * 48
    assert dict(frozen) == {0: bytes(48)}
    with pytest.raises(TypeError):
        frozen[1] = b"x"  # type: ignore[index]


def test_a_checked_document_keeps_its_pcrs_read_only(document: bytes) -> None:
    checker = RecipientChecker(trusted_verifier(True), timedelta(seconds=60))
    signed = parse_document(document).document
    found = checker.check(document, now=signed.timestamp)
    assert type(found.pcrs) is MappingProxyType
    assert dict(found.pcrs) == dict(signed.pcrs)
