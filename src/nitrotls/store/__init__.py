"""nitrotls.store: where bundles live — put, latest, get, list, lease — in a directory or S3.

The store is untrusted and treats bundle bytes as opaque; what it guarantees is publication:
readers never see half a bundle, the latest pointer moves by compare-and-swap (two writers never
both win), and a lease has one live holder (a crashed holder's lease expires). It also keeps
HTTP-01 tokens for the ACME responder and small opaque objects (the sealed ACME account).

Public API: :class:`BundleStore`, :class:`DirectoryStore`, :class:`S3Store` (lazy, needs boto3),
:func:`open_store`, :class:`Latest`, :class:`Lease`, and the errors of :mod:`.errors`.
See docs/store.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nitrotls.store.base import BundleStore, Latest, Lease
from nitrotls.store.directory import DirectoryStore
from nitrotls.store.errors import (
    BundleExistsError,
    BundleNotFoundError,
    InvalidLeaseError,
    InvalidStoreNameError,
    LeaseHeldError,
    LeaseLostError,
    StoreConflictError,
    StoreCorruptError,
    StoreError,
    StoreSpecError,
    StoreTooLargeError,
    StoreUnavailableError,
)
from nitrotls.store.spec import open_store

if TYPE_CHECKING:
    from nitrotls.store.s3 import S3Store

__all__ = [
    "BundleExistsError",
    "BundleNotFoundError",
    "BundleStore",
    "DirectoryStore",
    "InvalidLeaseError",
    "InvalidStoreNameError",
    "Latest",
    "Lease",
    "LeaseHeldError",
    "LeaseLostError",
    "S3Store",
    "StoreConflictError",
    "StoreCorruptError",
    "StoreError",
    "StoreSpecError",
    "StoreTooLargeError",
    "StoreUnavailableError",
    "open_store",
]


def __getattr__(name: str) -> Any:
    if name == "S3Store":
        from nitrotls.store.s3 import S3Store

        return S3Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
