"""The slices of other packages the generator calls, as protocols (so tests can stand in)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from nitrotls.nsm import AttestationSource
from nitrotls.secrets import SecretBuffer


class DataKeyLike(Protocol):
    """What ``KMSClient.generate_data_key`` returns."""

    @property
    def key_id(self) -> str: ...

    @property
    def ciphertext_blob(self) -> bytes: ...

    @property
    def plaintext(self) -> SecretBuffer: ...


class KeyService(Protocol):
    """``nitrotls.kms.client.KMSClient``: data keys released only to an attested enclave."""

    def generate_data_key(
        self, key_id: str, context: Mapping[str, str], source: AttestationSource
    ) -> DataKeyLike: ...

    def decrypt(
        self,
        blob: bytes,
        context: Mapping[str, str],
        source: AttestationSource,
        key_id: str | None = None,
    ) -> SecretBuffer: ...
