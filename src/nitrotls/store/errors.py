"""Typed errors of the bundle store: each says what was expected, what was found, what to do."""

from __future__ import annotations

from nitrotls.errors import NitroTLSError


class StoreError(NitroTLSError):
    """Base of every store error."""


class InvalidStoreNameError(StoreError):
    """A name, id, key or token outside the strict charset (refused before any I/O)."""

    exit_code = 2


class InvalidLeaseError(StoreError, ValueError):
    """A lease ttl outside (0, 86400] seconds."""


class StoreSpecError(StoreError):
    """A store spec string (``dir:PATH``, ``s3://bucket/prefix``) that cannot be used."""

    exit_code = 2


class StoreConflictError(StoreError):
    """Another writer won: the latest pointer moved, or the object already exists."""


class BundleExistsError(StoreConflictError):
    """A bundle with this id was already published; ids are never reused."""


class LeaseHeldError(StoreConflictError):
    """Another holder has an unexpired lease on this name."""


class LeaseLostError(StoreError):
    """The lease expired and was taken over (or removed); the holder must stop."""


class BundleNotFoundError(StoreError):
    """No bundle with this id under this name."""


class StoreCorruptError(StoreError):
    """The store holds something it never writes (a dangling pointer, a garbled record)."""


class StoreUnavailableError(StoreError):
    """The backend could not be reached or refused the operation (I/O, network, permissions)."""


class StoreTooLargeError(StoreError):
    """An object above the store's size limit (refused on write and on read)."""
