"""The ACME account key, sealed like a TLS key and kept in the store, reused across runs.

Record (deterministic CBOR, strictly decoded): ``v`` 1, ``t`` "nitrotls/acme-account/1",
``directory`` (the ACME directory URL), ``uri`` (the account URL, "" until registered), ``spki``
(DER public key), ``key`` {alg, iv, ct} and ``dek`` {kms_key_id, blob, context}, exactly as in a
bundle. AAD = deterministic CBOR {t, directory, spki: SHA-384(spki)}; KMS context
{"nitrotls:acme-account": SHA-256(directory) hex, "nitrotls:spki-sha384": hex}. The store is
untrusted: a swapped record either fails KMS's context, the AEAD, or the key-matches check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nitrotls.bundle import (
    BundleError,
    SealedKey,
    WrappedDataKey,
    aead_open,
    aead_seal,
    check_key_matches,
    spki_sha384,
)
from nitrotls.cbor import deterministic_dumps
from nitrotls.generator.errors import AccountRecordError
from nitrotls.generator.ports import KeyService
from nitrotls.generator.steps import StepLog
from nitrotls.nsm import AttestationSource
from nitrotls.secrets import wipe
from nitrotls.store import BundleStore

RECORD_TYPE = "nitrotls/acme-account/1"
CONTEXT_ACCOUNT = "nitrotls:acme-account"
CONTEXT_SPKI = "nitrotls:spki-sha384"
MAX_RECORD_BYTES = 64 * 1024
_FIELDS = frozenset({"v", "t", "directory", "uri", "spki", "key", "dek"})

AccountKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def object_key(directory_url: str) -> str:
    """The store object holding the account for one ACME directory."""
    return "acme-account-" + hashlib.sha256(directory_url.encode()).hexdigest()[:32]


def account_context(directory_url: str, spki: bytes) -> dict[str, str]:
    return {
        CONTEXT_ACCOUNT: hashlib.sha256(directory_url.encode()).hexdigest(),
        CONTEXT_SPKI: spki_sha384(spki).hex(),
    }


def account_aad(directory_url: str, spki: bytes) -> bytes:
    return deterministic_dumps(
        {"t": RECORD_TYPE, "directory": directory_url, "spki": spki_sha384(spki)}
    )


@dataclass(frozen=True)
class SealedAccount:
    directory: str
    uri: str
    spki: bytes
    key: SealedKey
    dek: WrappedDataKey

    def encode(self) -> bytes:
        return deterministic_dumps(
            {
                "v": 1,
                "t": RECORD_TYPE,
                "directory": self.directory,
                "uri": self.uri,
                "spki": self.spki,
                "key": self.key.to_cbor(),
                "dek": self.dek.to_cbor(),
            }
        )


def decode_account(raw: bytes) -> SealedAccount:
    """Strict decode: exact fields and types, canonical bytes."""
    if len(raw) > MAX_RECORD_BYTES:
        raise AccountRecordError(f"the ACME account record is larger than {MAX_RECORD_BYTES} bytes")
    try:
        value: Any = cbor2.loads(raw)
        if not isinstance(value, dict) or set(value) != _FIELDS:
            raise AccountRecordError("the ACME account record has the wrong fields")
        if value["v"] != 1 or value["t"] != RECORD_TYPE:
            raise AccountRecordError("the ACME account record is of an unknown version or type")
        record = SealedAccount(
            directory=_typed(value["directory"], str),
            uri=_typed(value["uri"], str),
            spki=_typed(value["spki"], bytes),
            key=SealedKey(**_typed(value["key"], dict)),
            dek=WrappedDataKey(**_typed(value["dek"], dict)),
        )
    except AccountRecordError:
        raise
    except (BundleError, cbor2.CBORError, TypeError, ValueError, RecursionError) as error:
        raise AccountRecordError(f"the ACME account record is malformed: {error}") from None
    if record.encode() != raw:
        raise AccountRecordError("the ACME account record is not canonically encoded")
    return record


def _typed(value: Any, kind: type) -> Any:
    if type(value) is not kind:
        raise AccountRecordError(f"the ACME account record holds a {type(value).__name__}")
    return value


@dataclass
class Account:
    """An unsealed account key (kept for the ACME session) and its account URL, if known."""

    key: AccountKey
    uri: str | None
    record: SealedAccount


class AccountVault:
    """Loads the sealed account from the store, or makes, seals and stores a new one."""

    def __init__(
        self,
        store: BundleStore,
        kms: KeyService,
        source: AttestationSource,
        kms_key_id: str,
        log: StepLog,
        secret_observer: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self._store, self._kms, self._source = store, kms, source
        self._key_id, self._log = kms_key_id, log
        self._observe = secret_observer  # test seam only: sees plaintext before it is wiped

    def load(self, directory_url: str) -> Account:
        raw = self._store.get_object(object_key(directory_url))
        if raw is None:
            return self._create(directory_url)
        record = decode_account(raw)
        if record.directory != directory_url:
            raise AccountRecordError(
                f"the stored ACME account is for {record.directory}, not {directory_url}"
            )
        expected = account_context(directory_url, record.spki)
        if dict(record.dek.context) != expected:
            raise AccountRecordError("the stored ACME account's KMS context does not match it")
        with self._kms.decrypt(
            record.dek.blob, expected, self._source, key_id=record.dek.kms_key_id
        ) as data_key:
            self._see("data-key", data_key.data)
            plain = aead_open(record.key, data_key, account_aad(directory_url, record.spki))
        try:
            self._see("acme-account-key", plain)
            check_key_matches(plain, record.spki)
            key = serialization.load_der_private_key(plain, password=None)
        finally:
            wipe(plain)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise AccountRecordError("the stored ACME account key is neither EC nor RSA")
        self._log.step(
            "account",
            f"ACME account key unsealed from the store ({record.uri or 'not yet registered'})",
        )
        return Account(key, record.uri or None, record)

    def _create(self, directory_url: str) -> Account:
        key = ec.generate_private_key(ec.SECP256R1())
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        serialized = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        plain = bytearray(serialized)
        del serialized
        context = account_context(directory_url, spki)
        try:
            data_key = self._kms.generate_data_key(self._key_id, context, self._source)
            with data_key.plaintext as secret:
                self._see("acme-account-key", plain)
                self._see("data-key", secret.data)
                sealed = aead_seal(plain, secret, account_aad(directory_url, spki))
        finally:
            wipe(plain)
        dek = WrappedDataKey(data_key.key_id, data_key.ciphertext_blob, context)
        record = SealedAccount(directory_url, "", spki, sealed, dek)
        self._store.put_object(object_key(directory_url), record.encode())
        self._log.step("account", "new ACME account key made, sealed under KMS and stored")
        return Account(key, None, record)

    def _see(self, what: str, secret: bytearray) -> None:
        if self._observe is not None:
            self._observe(what, bytes(secret))

    def remember_uri(self, account: Account, uri: str) -> None:
        """Store the account URL beside the sealed key, so later runs skip the lookup."""
        if account.uri == uri:
            return
        account.record = replace(account.record, uri=uri)
        account.uri = uri
        self._store.put_object(object_key(account.record.directory), account.record.encode())
