"""KMS GenerateDataKey and Decrypt for an enclave: the answer is sealed to an attested key.

Each call makes a fresh RSA-2048 key pair, asks the attestation source for a document carrying
its public key, and sends that document as KMS's ``Recipient``. KMS checks the document against
the key policy and answers with ``CiphertextForRecipient``, an envelope only that ephemeral key
opens; the plaintext arrives in a :class:`~nitrotls.secrets.SecretBuffer` and the key is dropped.
The same code talks to AWS KMS and to ``nitrotls kms serve`` (set ``endpoint_url``). It uses
botocore directly, not boto3: the same client, request signing and credential chain, without
importing boto3's resource layer and s3transfer (about 5 ms of a CLI process's start-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.session import Session
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nitrotls.errors import NitroTLSError
from nitrotls.kms.cms import open_enveloped
from nitrotls.kms.errors import (
    KMSAccessDeniedError,
    KMSError,
    KMSRequestError,
    KMSResponseError,
    KMSUnavailableError,
)
from nitrotls.kms.retry import RetryPolicy, is_retryable
from nitrotls.secrets import SecretBuffer

DATA_KEY_BYTES = 32
EPHEMERAL_KEY_BITS = 2048
KEY_ENCRYPTION_ALGORITHM = "RSAES_OAEP_SHA_256"
ACCESS_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied"})
SHOWN_PCRS = (0, 1, 2, 8)


class DocumentSource(Protocol):
    """The part of ``nitrotls.nsm.AttestationSource`` KMS needs: a document for a public key."""

    def attest(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes: ...


@dataclass(frozen=True)
class DataKey:
    """A fresh data key: ``plaintext`` (wipe it after use) and the blob KMS can decrypt later."""

    key_id: str
    ciphertext_blob: bytes
    plaintext: SecretBuffer

    def wipe(self) -> None:
        self.plaintext.wipe()

    def __enter__(self) -> DataKey:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wipe()


class _Recipient:
    """An ephemeral RSA key and the attestation document that carries its public half."""

    def __init__(self, source: DocumentSource) -> None:
        self._key: rsa.RSAPrivateKey | None = rsa.generate_private_key(
            public_exponent=65537, key_size=EPHEMERAL_KEY_BITS
        )
        spki = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.document = source.attest(public_key=spki)

    @property
    def parameter(self) -> dict[str, Any]:
        return {
            "KeyEncryptionAlgorithm": KEY_ENCRYPTION_ALGORITHM,
            "AttestationDocument": self.document,
        }

    def open(self, operation: str, response: Mapping[str, Any]) -> SecretBuffer:
        """Open ``CiphertextForRecipient``; refuse answers a real KMS never gives."""
        if response.get("Plaintext"):
            raise KMSResponseError(
                f"KMS {operation} returned Plaintext although a Recipient was sent; a real KMS "
                "never does (the endpoint or a proxy is misbehaving), so the answer is refused"
            )
        envelope = response.get("CiphertextForRecipient")
        if not envelope:
            raise KMSResponseError(
                f"KMS {operation} returned no CiphertextForRecipient for the Recipient sent; "
                "the endpoint does not support attestation (is it a real KMS?)"
            )
        if self._key is None:
            raise KMSError("this ephemeral recipient key was already used")
        return SecretBuffer(open_enveloped(bytes(envelope), self._key))

    def drop(self) -> None:
        self._key = None


class KMSClient:
    """GenerateDataKey and Decrypt with attestation, over boto3 (AWS KMS or a local server)."""

    def __init__(
        self,
        endpoint_url: str | None = None,
        region_name: str = "us-east-1",
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        max_attempts: int = 5,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        if (access_key_id is None) != (secret_access_key is None):
            raise KMSError("give both access_key_id and secret_access_key, or neither")
        self._retry = retry or RetryPolicy(max_attempts=max_attempts)
        session = Session()
        if access_key_id is not None and secret_access_key is not None:
            session.set_credentials(access_key_id, secret_access_key, session_token)
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent_extra="nitrotls",
        )
        self._kms = session.create_client(
            "kms", region_name=region_name, endpoint_url=endpoint_url, config=config
        )

    def generate_data_key(
        self, key_id: str, context: Mapping[str, str], source: DocumentSource
    ) -> DataKey:
        """A new AES-256 data key under ``key_id``, released only to an attested enclave."""
        recipient = _Recipient(source)
        try:
            response = self._call(
                "GenerateDataKey",
                recipient,
                KeyId=key_id,
                EncryptionContext=dict(context),
                KeySpec="AES_256",
                Recipient=recipient.parameter,
            )
            plaintext = _data_key(recipient.open("GenerateDataKey", response))
        finally:
            recipient.drop()
        blob = response.get("CiphertextBlob")
        if not blob:
            plaintext.wipe()
            raise KMSResponseError("KMS GenerateDataKey returned no CiphertextBlob")
        return DataKey(str(response.get("KeyId") or key_id), bytes(blob), plaintext)

    def decrypt(
        self,
        blob: bytes,
        context: Mapping[str, str],
        source: DocumentSource,
        key_id: str | None = None,
    ) -> SecretBuffer:
        """Decrypt a CiphertextBlob; the plaintext is sealed to this enclave on the way."""
        recipient = _Recipient(source)
        params: dict[str, Any] = {
            "CiphertextBlob": bytes(blob),
            "EncryptionContext": dict(context),
            "Recipient": recipient.parameter,
        }
        if key_id is not None:
            params["KeyId"] = key_id
        try:
            response = self._call("Decrypt", recipient, **params)
            return recipient.open("Decrypt", response)
        finally:
            recipient.drop()

    def _call(self, operation: str, recipient: _Recipient, **params: Any) -> Mapping[str, Any]:
        method = getattr(self._kms, _snake(operation))
        last = ""
        for attempt in range(self._retry.max_attempts):
            try:
                response: Mapping[str, Any] = method(**params)
                return response
            except ClientError as error:
                code, status, message = _describe(error)
                if code in ACCESS_DENIED_CODES:
                    raise _denied(operation, params, code, message, recipient.document) from None
                if not is_retryable(code, status):
                    raise KMSRequestError(
                        f"KMS {operation} failed: {code or 'unknown error'} (HTTP {status}): "
                        f"{message}",
                        code,
                    ) from None
                last = f"{code or 'error'} (HTTP {status}): {message}"
            except (BotoConnectionError, HTTPClientError) as error:
                last = f"cannot reach KMS: {error}"
            except BotoCoreError as error:
                raise KMSRequestError(f"KMS {operation} could not be sent: {error}") from None
            if attempt + 1 < self._retry.max_attempts:
                self._retry.wait(attempt)
        raise KMSUnavailableError(
            f"KMS {operation} failed {self._retry.max_attempts} times; last: {last}"
        )


def _data_key(plaintext: SecretBuffer) -> SecretBuffer:
    if len(plaintext) != DATA_KEY_BYTES:
        size = len(plaintext)
        plaintext.wipe()
        raise KMSResponseError(f"expected a {DATA_KEY_BYTES}-byte data key, KMS sent {size}")
    return plaintext


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


def _describe(error: ClientError) -> tuple[str, int, str]:
    details = error.response.get("Error", {})
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(details.get("Code", "")), int(status or 0), str(details.get("Message", ""))


def _denied(
    operation: str, params: Mapping[str, Any], code: str, message: str, document: bytes
) -> KMSAccessDeniedError:
    pcrs = _presented_pcrs(document)
    target = params.get("KeyId", "the key named in the blob")
    return KMSAccessDeniedError(
        f"KMS refused {operation} on {target} ({code}: {message}). The enclave presented "
        f"{_pcr_summary(pcrs)}; the key policy must allow these measurements for kms:"
        f"{operation} (see `nitrotls kms policy`), and the encryption context must match",
        code,
        pcrs,
    )


def _presented_pcrs(document: bytes) -> dict[int, bytes]:
    try:
        from nitrotls.attestation import parse_document

        pcrs = parse_document(document).document.pcrs
    except NitroTLSError:
        return {}
    return {index: bytes(pcrs[index]) for index in SHOWN_PCRS if index in pcrs}


def _pcr_summary(pcrs: Mapping[int, bytes]) -> str:
    if not pcrs:
        return "a document whose PCRs could not be read"
    parts = [f"PCR{index}={value.hex()[:16]}…" for index, value in sorted(pcrs.items())]
    if all(not any(pcrs.get(index, b"\x01")) for index in (0, 1, 2)):
        parts.append("(all zero: a debug-mode enclave)")
    return " ".join(parts)
