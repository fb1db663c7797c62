"""Making a bundle inside the generator: build the record, then bind it with an attestation."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from nitrotls.attestation import parse_document
from nitrotls.attestation.errors import AttestationError
from nitrotls.bundle.chain import leaf_spki
from nitrotls.bundle.errors import ContextMismatchError, GeneratorDocumentError
from nitrotls.bundle.format import ID_BYTES, Bundle, SealedKey, WrappedDataKey
from nitrotls.bundle.seal import encryption_context

if TYPE_CHECKING:
    from nitrotls.nsm import AttestationSource


def new_bundle_id() -> bytes:
    """16 random bytes naming one bundle (and, through the context, its data key)."""
    return secrets.token_bytes(ID_BYTES)


def build(
    *,
    bundle_id: bytes,
    seq: int,
    name: str,
    chain: Sequence[bytes],
    key: SealedKey,
    dek: WrappedDataKey,
    created_ms: int | None = None,
) -> Bundle:
    """An unbound bundle; refuses a context that does not match the id, name and leaf key."""
    bundle = Bundle(
        bundle_id=bundle_id,
        seq=seq,
        name=name,
        created_ms=int(time.time() * 1000) if created_ms is None else created_ms,
        chain=tuple(chain),
        key=key,
        dek=dek,
    )
    expected = encryption_context(bundle_id, name, leaf_spki(bundle.chain))
    if dict(dek.context) != expected:
        raise ContextMismatchError(
            "the data key's encryption context does not match this bundle's id, name and leaf "
            f"key: expected {expected}, found {dict(dek.context)}"
        )
    return bundle


def bind(bundle: Bundle, source: AttestationSource) -> Bundle:
    """Ask ``source`` for a document over the binding bytes and return the bound bundle."""
    user_data = bundle.binding_user_data()
    document = source.attest(user_data=user_data)
    try:
        parsed = parse_document(document).document
    except AttestationError as error:
        raise GeneratorDocumentError(
            f"the attestation source returned a bad document: {error}"
        ) from None
    if parsed.user_data != user_data:
        raise GeneratorDocumentError("the attestation source did not sign the requested user_data")
    return replace(bundle, gen=bytes(document))
