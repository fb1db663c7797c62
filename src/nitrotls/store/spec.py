"""Store spec strings, so every command names a store the same way.

``dir:PATH`` or a bare path → :class:`DirectoryStore`; ``s3://bucket/prefix`` with optional
``?endpoint_url=...&region=...`` → :class:`S3Store` (credentials from the usual boto3 chain);
nothing → the default directory under the data directory. Readers pass ``read_only=True`` so
that a directory store is never created by them (see :class:`DirectoryStore`); S3 stores never
create their bucket either way.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from nitrotls.store.base import BundleStore
from nitrotls.store.directory import DirectoryStore
from nitrotls.store.errors import StoreSpecError

_S3_OPTIONS = {"endpoint_url", "region"}


def open_store(spec: str | None, *, read_only: bool = False) -> BundleStore:
    """Open the store a spec string names (see module docstring)."""
    if spec is None or not spec.strip():
        return DirectoryStore(read_only=read_only)
    spec = spec.strip()
    if spec.startswith("s3://"):
        return _open_s3(spec)
    if spec.startswith("dir:"):
        spec = spec[len("dir:") :]
        if not spec:
            raise StoreSpecError("store spec 'dir:' needs a path, e.g. dir:/var/lib/nitrotls/store")
    elif "://" in spec:
        raise StoreSpecError(
            f"unknown store spec {spec!r}: expected dir:PATH, a path, or s3://bucket/prefix"
        )
    return DirectoryStore(spec, read_only=read_only)


def _open_s3(spec: str) -> BundleStore:
    from nitrotls.store.s3 import S3Store  # boto3 is only needed for S3 stores

    parts = urlsplit(spec)
    if not parts.netloc:
        raise StoreSpecError(f"store spec {spec!r} has no bucket: expected s3://bucket/prefix")
    if parts.fragment or parts.username or parts.password or parts.port:
        raise StoreSpecError(f"store spec {spec!r}: only s3://bucket/prefix?options is accepted")
    try:
        options = parse_qs(parts.query, strict_parsing=bool(parts.query))
    except ValueError as error:
        raise StoreSpecError(f"store spec {spec!r} has a malformed query: {error}") from error
    unknown = set(options) - _S3_OPTIONS
    if unknown:
        raise StoreSpecError(
            f"store spec {spec!r}: unknown option(s) {sorted(unknown)}; "
            f"known: {sorted(_S3_OPTIONS)}"
        )
    single = {key: values[-1] for key, values in options.items()}
    return S3Store(
        parts.netloc,
        parts.path,
        endpoint_url=single.get("endpoint_url"),
        region=single.get("region"),
    )
