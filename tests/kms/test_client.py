"""KMSClient against a tiny fake KMS on 127.0.0.1 that answers with real CMS envelopes."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from nitrotls.attestation import parse_document
from nitrotls.kms.client import DataKey, KMSClient
from nitrotls.kms.cms import build_enveloped
from nitrotls.kms.errors import (
    KMSAccessDeniedError,
    KMSError,
    KMSRequestError,
    KMSResponseError,
    KMSUnavailableError,
)
from nitrotls.kms.retry import RetryPolicy
from nitrotls.nsm import SimulatedNSM, measure_image
from nitrotls.secrets import SecretBuffer

KEY_ARN = "arn:aws:kms:us-east-1:000000000000:key/11111111-2222-3333-4444-555555555555"
CONTEXT = {"nitrotls:bundle": "00" * 16, "nitrotls:name": "example.test"}

Reply = tuple[int, dict[str, Any]]
Handler = Callable[[str, dict[str, Any]], Reply]


def recipient_key(body: dict[str, Any]) -> RSAPublicKey:
    """The Recipient document's public key, read without verifying (this is a unit test)."""
    document = base64.b64decode(body["Recipient"]["AttestationDocument"])
    public = parse_document(document).document.public_key
    assert public is not None
    key = load_der_public_key(public)
    assert isinstance(key, RSAPublicKey)
    return key


class FakeKMS:
    """Answers the KMS JSON 1.1 protocol; ``script`` replies first, then an honest KMS."""

    def __init__(self) -> None:
        self.script: list[Handler] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.data_keys: dict[bytes, bytes] = {}
        self.release = threading.Event()

    def handle(self, operation: str, body: dict[str, Any]) -> Reply:
        self.requests.append((operation, body))
        if self.script:
            return self.script.pop(0)(operation, body)
        return self.honest(operation, body)

    def honest(self, operation: str, body: dict[str, Any]) -> Reply:
        if operation == "GenerateDataKey":
            blob = b"blob-" + os.urandom(16)
            self.data_keys[blob] = os.urandom(32)
            return 200, {
                "KeyId": KEY_ARN,
                "CiphertextBlob": b64(blob),
                "CiphertextForRecipient": b64(
                    build_enveloped(self.data_keys[blob], recipient_key(body))
                ),
            }
        if operation == "Decrypt":
            blob = base64.b64decode(body["CiphertextBlob"])
            if blob not in self.data_keys:
                return error(400, "InvalidCiphertextException", "unknown blob")
            envelope = build_enveloped(self.data_keys[blob], recipient_key(body), chunked=False)
            return 200, {
                "KeyId": KEY_ARN,
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "CiphertextForRecipient": b64(envelope),
            }
        return error(400, "UnsupportedOperationException", operation)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def error(status: int, code: str, message: str) -> Reply:
    return status, {"__type": code, "message": message}


def make_handler(fake: FakeKMS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            target = self.headers.get("X-Amz-Target", "")
            assert target.startswith("TrentService.")
            status, reply = fake.handle(target.removeprefix("TrentService."), body)
            if status == 0:  # hang until the test ends (a read timeout)
                fake.release.wait(30)
                return
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", "fake")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def fake_kms() -> Iterator[tuple[FakeKMS, str]]:
    fake = FakeKMS()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "main-enclave.img"
    path.write_bytes(b"nitrotls test image for the KMS client\n")
    return path


@pytest.fixture
def source(image: Path) -> SimulatedNSM:
    return SimulatedNSM(image)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def client(endpoint: str, sleeps: Sleeps | None = None, **kwargs: Any) -> KMSClient:
    retry = RetryPolicy(max_attempts=4, sleep=sleeps or Sleeps(), random=lambda: 1.0)
    return KMSClient(
        endpoint,
        "eu-west-1",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="secret",
        retry=retry,
        **kwargs,
    )


# --- success ------------------------------------------------------------------------------------


def test_generate_then_decrypt(fake_kms: tuple[FakeKMS, str], source: SimulatedNSM) -> None:
    fake, endpoint = fake_kms
    kms = client(endpoint)
    data_key = kms.generate_data_key("alias/nitrotls", CONTEXT, source)
    assert isinstance(data_key, DataKey)
    assert data_key.key_id == KEY_ARN
    assert isinstance(data_key.plaintext, SecretBuffer)
    expected = fake.data_keys[data_key.ciphertext_blob]
    assert bytes(data_key.plaintext.data) == expected
    with kms.decrypt(data_key.ciphertext_blob, CONTEXT, source, key_id=KEY_ARN) as plaintext:
        assert bytes(plaintext.data) == expected
    assert plaintext.data == bytearray(32)  # wiped on leaving the block
    with data_key:
        pass
    assert data_key.plaintext.data == bytearray(32)


def test_requests_carry_a_fresh_recipient(
    fake_kms: tuple[FakeKMS, str], source: SimulatedNSM
) -> None:
    fake, endpoint = fake_kms
    kms = client(endpoint)
    blob = kms.generate_data_key("alias/nitrotls", CONTEXT, source).ciphertext_blob
    kms.decrypt(blob, CONTEXT, source).wipe()
    (op1, generate), (op2, decrypt) = fake.requests
    assert (op1, op2) == ("GenerateDataKey", "Decrypt")
    assert generate["KeySpec"] == "AES_256"
    assert generate["KeyId"] == "alias/nitrotls"
    assert generate["EncryptionContext"] == CONTEXT
    assert decrypt["EncryptionContext"] == CONTEXT
    assert "KeyId" not in decrypt
    for body in (generate, decrypt):
        assert body["Recipient"]["KeyEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
        assert recipient_key(body).key_size == 2048
    assert recipient_key(generate).public_numbers() != recipient_key(decrypt).public_numbers()


# --- refusals -----------------------------------------------------------------------------------


def test_access_denied_names_the_presented_pcrs(
    fake_kms: tuple[FakeKMS, str], source: SimulatedNSM, image: Path
) -> None:
    fake, endpoint = fake_kms
    fake.script.append(lambda op, body: error(400, "AccessDeniedException", "not allowed"))
    with pytest.raises(KMSAccessDeniedError) as caught:
        client(endpoint).decrypt(b"blob", CONTEXT, source, key_id=KEY_ARN)
    measured = measure_image(image)
    message = str(caught.value)
    for index in (0, 1, 2):
        assert f"PCR{index}={measured[index].hex()[:16]}" in message
        assert caught.value.pcrs[index] == measured[index]
    assert "Decrypt" in message
    assert KEY_ARN in message
    assert "not allowed" in message
    assert caught.value.code == "AccessDeniedException"
    assert len(fake.requests) == 1  # never retried


def test_access_denied_for_a_debug_enclave_says_so(
    fake_kms: tuple[FakeKMS, str], image: Path
) -> None:
    fake, endpoint = fake_kms
    fake.script.append(lambda op, body: error(400, "AccessDeniedException", "no"))
    with pytest.raises(KMSAccessDeniedError, match="debug-mode enclave"):
        client(endpoint).generate_data_key("k", CONTEXT, SimulatedNSM(image, debug=True))


def test_throttling_is_retried_with_backoff(
    fake_kms: tuple[FakeKMS, str], source: SimulatedNSM
) -> None:
    fake, endpoint = fake_kms
    throttle: Handler = lambda op, body: error(400, "ThrottlingException", "slow down")  # noqa: E731
    fake.script += [throttle, throttle]
    sleeps = Sleeps()
    data_key = client(endpoint, sleeps).generate_data_key("k", CONTEXT, source)
    assert bytes(data_key.plaintext.data) == fake.data_keys[data_key.ciphertext_blob]
    assert len(fake.requests) == 3
    assert sleeps.delays == [0.05, 0.1]


def test_server_errors_exhaust_retries(fake_kms: tuple[FakeKMS, str], source: SimulatedNSM) -> None:
    fake, endpoint = fake_kms
    fake.script += [lambda op, body: error(500, "KMSInternalException", "boom")] * 4
    sleeps = Sleeps()
    with pytest.raises(KMSUnavailableError, match=r"4 times; last: KMSInternalException"):
        client(endpoint, sleeps).decrypt(b"blob", CONTEXT, source)
    assert len(fake.requests) == 4
    assert sleeps.delays == [0.05, 0.1, 0.2]


def test_other_errors_keep_the_aws_code(
    fake_kms: tuple[FakeKMS, str], source: SimulatedNSM
) -> None:
    fake, endpoint = fake_kms
    with pytest.raises(KMSRequestError, match="InvalidCiphertextException") as caught:
        client(endpoint).decrypt(b"never issued", CONTEXT, source)
    assert caught.value.code == "InvalidCiphertextException"
    assert not isinstance(caught.value, KMSAccessDeniedError)
    assert len(fake.requests) == 1


def plaintext_beside_recipient(op: str, body: dict[str, Any]) -> Reply:
    return 200, {
        "KeyId": KEY_ARN,
        "CiphertextBlob": b64(b"blob"),
        "Plaintext": b64(b"k" * 32),
        "CiphertextForRecipient": b64(build_enveloped(b"k" * 32, recipient_key(body))),
    }


def no_envelope(op: str, body: dict[str, Any]) -> Reply:
    return 200, {"KeyId": KEY_ARN, "CiphertextBlob": b64(b"blob")}


def short_key(op: str, body: dict[str, Any]) -> Reply:
    envelope = build_enveloped(b"k" * 16, recipient_key(body))
    return 200, {
        "KeyId": KEY_ARN,
        "CiphertextBlob": b64(b"b"),
        "CiphertextForRecipient": b64(envelope),
    }


def no_blob(op: str, body: dict[str, Any]) -> Reply:
    envelope = build_enveloped(b"k" * 32, recipient_key(body))
    return 200, {"KeyId": KEY_ARN, "CiphertextForRecipient": b64(envelope)}


def garbage_envelope(op: str, body: dict[str, Any]) -> Reply:
    return 200, {
        "KeyId": KEY_ARN,
        "CiphertextBlob": b64(b"b"),
        "CiphertextForRecipient": b64(b"\x30\x80"),
    }


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (plaintext_beside_recipient, "returned Plaintext although a Recipient was sent"),
        (no_envelope, "no CiphertextForRecipient"),
        (short_key, "32-byte data key, KMS sent 16"),
        (no_blob, "no CiphertextBlob"),
        (garbage_envelope, "envelope ends"),
    ],
)
def test_impossible_generate_answers_are_refused(
    fake_kms: tuple[FakeKMS, str], source: SimulatedNSM, reply: Handler, message: str
) -> None:
    fake, endpoint = fake_kms
    fake.script.append(reply)
    with pytest.raises(KMSError, match=message):
        client(endpoint).generate_data_key("k", CONTEXT, source)


def test_plaintext_beside_recipient_refused_on_decrypt(
    fake_kms: tuple[FakeKMS, str], source: SimulatedNSM
) -> None:
    fake, endpoint = fake_kms
    fake.script.append(plaintext_beside_recipient)
    with pytest.raises(KMSResponseError, match="Plaintext"):
        client(endpoint).decrypt(b"blob", CONTEXT, source)


# --- transport failures ---------------------------------------------------------------------------


def test_unreachable_endpoint_is_unavailable(source: SimulatedNSM) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = Sleeps()
    with pytest.raises(KMSUnavailableError, match="cannot reach KMS"):
        client(f"http://127.0.0.1:{port}", sleeps).decrypt(b"blob", CONTEXT, source)
    assert len(sleeps.delays) == 3


def test_read_timeout_is_unavailable(fake_kms: tuple[FakeKMS, str], source: SimulatedNSM) -> None:
    fake, endpoint = fake_kms
    fake.script.append(lambda op, body: (0, {}))
    retry = RetryPolicy(max_attempts=1)
    kms = KMSClient(
        endpoint, access_key_id="a", secret_access_key="b", retry=retry, read_timeout=0.2
    )
    with pytest.raises(KMSUnavailableError, match="1 times"):
        kms.decrypt(b"blob", CONTEXT, source)


def test_half_given_credentials_are_refused() -> None:
    with pytest.raises(KMSError, match="both"):
        KMSClient("http://127.0.0.1:1", access_key_id="only-the-id")


def test_backoff_is_bounded_and_jittered() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0, random=lambda: 0.5)
    assert [policy.delay(n) for n in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert RetryPolicy(random=lambda: 0.0).delay(3) == 0.0
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
