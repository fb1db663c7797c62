"""A store in an S3 bucket, made safe for concurrent writers by S3 conditional writes.

Same layout as the directory store, under ``prefix``. New objects are written with
``If-None-Match: *`` (never replaced); the latest pointer and the lease record are replaced only
with ``If-Match: <ETag read>``, so of two writers that read the same state exactly one wins and the
other gets ``412 PreconditionFailed`` (or ``409 ConditionalRequestConflict``), turned into
:class:`StoreConflictError`. Pointers hold a unique id and lease records a fresh random token,
so an ETag never repeats for different states.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from nitrotls.store.base import (
    MAX_BUNDLE_BYTES,
    MAX_CHALLENGE_BYTES,
    MAX_OBJECT_BYTES,
    BundleStore,
    Latest,
    Lease,
    check_challenge_value,
    check_holder,
    check_name,
    check_size,
    check_token,
    check_ttl,
    decode_lease,
    decode_pointer,
    encode_lease,
    new_token,
)
from nitrotls.store.errors import (
    BundleExistsError,
    BundleNotFoundError,
    InvalidStoreNameError,
    LeaseHeldError,
    LeaseLostError,
    StoreConflictError,
    StoreCorruptError,
    StoreSpecError,
    StoreTooLargeError,
    StoreUnavailableError,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class _ConflictError(Exception):
    """Internal: a conditional write lost."""


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _normalise_prefix(prefix: str) -> str:
    parts = [part for part in prefix.strip("/").split("/") if part]
    try:
        for part in parts:
            check_name(part, "S3 prefix component")
    except InvalidStoreNameError as error:
        raise StoreSpecError(f"invalid S3 prefix {prefix!r}: {error}") from None
    return "".join(f"{part}/" for part in parts)


def make_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> S3Client:
    """A boto3 S3 client with bounded timeouts and retries (path-style for custom endpoints)."""
    config = Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
    )
    return client


class S3Store(BundleStore):
    """A :class:`BundleStore` in ``s3://bucket/prefix`` using conditional writes."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: S3Client | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not bucket or "/" in bucket:
            raise StoreSpecError(f"invalid S3 bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = _normalise_prefix(prefix)
        self._clock = clock
        self._client = client or make_client(
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.bucket}/{self.prefix}')"

    def close(self) -> None:
        self._client.close()

    # -- S3 primitives -----------------------------------------------------------------------

    @contextmanager
    def _s3(self, what: str) -> Iterator[None]:
        """Map boto errors: lost conditions → :class:`_ConflictError`, the rest → unavailable."""
        try:
            yield
        except ClientError as error:
            code = _code(error)
            if code in _CONFLICT_CODES:
                raise _ConflictError(code) from error
            message = error.response.get("Error", {}).get("Message", "") or code
            raise StoreUnavailableError(
                f"S3 refused {what} in s3://{self.bucket}/{self.prefix}: {code}: {message}"
            ) from error
        except BotoCoreError as error:
            raise StoreUnavailableError(
                f"S3 unreachable while {what} (s3://{self.bucket}/{self.prefix}): {error}"
            ) from error

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _get(self, key: str, limit: int, what: str) -> tuple[bytes, str] | None:
        """Body and ETag of ``key``, or ``None`` when it does not exist."""
        try:
            with self._s3(f"reading {what}"):
                response = self._client.get_object(Bucket=self.bucket, Key=key)
                if response.get("ContentLength", 0) > limit:
                    response["Body"].close()
                    raise StoreTooLargeError(f"{what} at {key} is larger than {limit} bytes")
                body = response["Body"].read(limit + 1)
        except StoreUnavailableError as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and _code(cause) in _MISSING_CODES:
                return None
            raise
        if len(body) > limit:
            raise StoreTooLargeError(f"{what} at {key} is larger than {limit} bytes")
        return body, response["ETag"]

    def _put(self, key: str, body: bytes, what: str, **conditions: str) -> None:
        with self._s3(f"writing {what}"):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=body, **conditions)  # type: ignore[arg-type]

    def _delete(self, key: str, what: str) -> None:
        with self._s3(f"deleting {what}"):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def _list(self, prefix: str, *, delimiter: bool) -> builtins.list[str]:
        """Child names directly below ``prefix`` (objects, or sub-prefixes with ``delimiter``)."""
        found: builtins.list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = "/"
        with self._s3(f"listing {prefix}"):
            for page in self._client.get_paginator("list_objects_v2").paginate(**kwargs):
                if delimiter:
                    entries = [item["Prefix"] for item in page.get("CommonPrefixes", [])]
                else:
                    entries = [item["Key"] for item in page.get("Contents", [])]
                found.extend(entry[len(prefix) :].rstrip("/") for entry in entries)
        return sorted(entry for entry in found if entry and "/" not in entry)

    # -- bundles -----------------------------------------------------------------------------

    def _pointer(self, name: str) -> tuple[str, str] | None:
        found = self._get(self._key("bundles", name, "latest"), 1024, f"latest pointer of {name!r}")
        if found is None:
            return None
        raw, etag = found
        return decode_pointer(raw, f"of {name!r}"), etag

    def put(self, name: str, bundle_id: str, data: bytes, *, expected_previous: str | None) -> None:
        check_name(name)
        check_name(bundle_id, "bundle id")
        if expected_previous is not None:
            check_name(expected_previous, "bundle id")
        payload = check_size(data, MAX_BUNDLE_BYTES, "bundle")
        pointer = self._pointer(name)
        current = pointer[0] if pointer else None
        if current != expected_previous:
            raise StoreConflictError(
                f"latest bundle of {name!r} is {current!r}, expected {expected_previous!r}: "
                "another writer published first; reload and retry"
            )
        object_key = self._key("bundles", name, "objects", bundle_id)
        try:
            self._put(object_key, payload, f"bundle {bundle_id!r}", IfNoneMatch="*")
        except _ConflictError:
            raise BundleExistsError(
                f"bundle id {bundle_id!r} already exists under {name!r}; use a fresh id"
            ) from None
        condition = {"IfMatch": pointer[1]} if pointer else {"IfNoneMatch": "*"}
        try:
            self._put(
                self._key("bundles", name, "latest"),
                f"{bundle_id}\n".encode(),
                f"latest pointer of {name!r}",
                **condition,
            )
        except _ConflictError:
            self._forget_orphan(object_key)
            raise StoreConflictError(
                f"latest bundle of {name!r} moved while publishing {bundle_id!r}: another writer "
                "won; reload and retry"
            ) from None

    def _forget_orphan(self, key: str) -> None:
        """Best effort: the loser's object is never pointed at; remove it if S3 lets us."""
        with suppress(StoreUnavailableError, _ConflictError):
            self._delete(key, "orphaned bundle")

    def latest(self, name: str) -> Latest | None:
        check_name(name)
        pointer = self._pointer(name)
        if pointer is None:
            return None
        data = self._get_bundle(name, pointer[0])
        if data is None:
            raise StoreCorruptError(
                f"latest pointer of {name!r} names bundle {pointer[0]!r}, which is missing"
            )
        return Latest(pointer[0], data)

    def _get_bundle(self, name: str, bundle_id: str) -> bytes | None:
        key = self._key("bundles", name, "objects", bundle_id)
        found = self._get(key, MAX_BUNDLE_BYTES, f"bundle {bundle_id!r}")
        return None if found is None else found[0]

    def get(self, name: str, bundle_id: str) -> bytes:
        check_name(name)
        check_name(bundle_id, "bundle id")
        data = self._get_bundle(name, bundle_id)
        if data is None:
            raise BundleNotFoundError(f"no bundle {bundle_id!r} under {name!r} in {self!r}")
        return data

    def list(self, name: str) -> builtins.list[str]:
        check_name(name)
        return self._list(self._key("bundles", name, "objects", ""), delimiter=False)

    def names(self) -> builtins.list[str]:
        candidates = self._list(self._key("bundles", ""), delimiter=True)
        return [name for name in candidates if self._pointer(name) is not None]

    # -- leases ------------------------------------------------------------------------------

    def _lease_state(self, name: str) -> tuple[Lease, str] | None:
        found = self._get(self._key("leases", name), 4096, f"lease of {name!r}")
        if found is None:
            return None
        return decode_lease(name, found[0], f"of {name!r}"), found[1]

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease:
        check_name(name)
        check_holder(holder)
        seconds = check_ttl(ttl)
        state = self._lease_state(name)
        now = self._clock()
        if state is not None:
            current = state[0]
            if current.holder != holder and current.expires_at > now:
                raise LeaseHeldError(
                    f"lease {name!r} is held by {current.holder!r} for another "
                    f"{current.expires_at - now:.1f} s; retry later"
                )
        lease = Lease(name, holder, new_token(), now + seconds)
        condition = {"IfMatch": state[1]} if state else {"IfNoneMatch": "*"}
        try:
            self._put(
                self._key("leases", name), encode_lease(lease), f"lease {name!r}", **condition
            )
        except _ConflictError:
            raise LeaseHeldError(
                f"lease {name!r} was taken by another holder at the same moment; retry later"
            ) from None
        return lease

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        check_name(lease.name)
        seconds = check_ttl(ttl)
        state = self._lease_state(lease.name)
        if state is None or state[0].token != lease.token:
            holder = "nobody" if state is None else repr(state[0].holder)
            raise LeaseLostError(
                f"lease {lease.name!r} is no longer held by {lease.holder!r} (now: {holder}); "
                "stop work that needs it"
            )
        renewed = Lease(lease.name, lease.holder, lease.token, self._clock() + seconds)
        try:
            self._put(
                self._key("leases", lease.name),
                encode_lease(renewed),
                f"lease {lease.name!r}",
                IfMatch=state[1],
            )
        except _ConflictError:
            raise LeaseLostError(
                f"lease {lease.name!r} changed while renewing; stop work that needs it"
            ) from None
        return renewed

    def release_lease(self, lease: Lease) -> None:
        check_name(lease.name)
        state = self._lease_state(lease.name)
        if state is None or state[0].token != lease.token:
            return
        # An expired record written under If-Match, so a release can never erase a newer lease.
        released = Lease(lease.name, "", new_token(), 0.0)
        try:
            self._put(
                self._key("leases", lease.name),
                encode_lease(released),
                f"lease {lease.name!r}",
                IfMatch=state[1],
            )
        except _ConflictError:
            return

    # -- challenges and objects --------------------------------------------------------------

    def put_challenge(self, token: str, key_authorization: str) -> None:
        check_token(token)
        value = check_challenge_value(key_authorization)
        try:
            self._put(self._key("challenges", token), value, f"challenge {token!r}")
        except _ConflictError as error:
            raise StoreConflictError(f"S3 rejected writing challenge {token!r}: {error}") from None

    def get_challenge(self, token: str) -> str | None:
        check_token(token)
        found = self._get(self._key("challenges", token), MAX_CHALLENGE_BYTES, "challenge")
        if found is None:
            return None
        try:
            return found[0].decode("ascii")
        except UnicodeDecodeError as error:
            raise StoreCorruptError(f"challenge {token!r} is not ASCII") from error

    def delete_challenge(self, token: str) -> None:
        check_token(token)
        with suppress(_ConflictError):
            self._delete(self._key("challenges", token), f"challenge {token!r}")

    def put_object(self, key: str, data: bytes) -> None:
        check_name(key, "object key")
        payload = check_size(data, MAX_OBJECT_BYTES, "object")
        try:
            self._put(self._key("objects", key), payload, f"object {key!r}")
        except _ConflictError as error:
            raise StoreConflictError(f"S3 rejected writing object {key!r}: {error}") from None

    def get_object(self, key: str) -> bytes | None:
        check_name(key, "object key")
        found = self._get(self._key("objects", key), MAX_OBJECT_BYTES, f"object {key!r}")
        return None if found is None else found[0]

    def delete_object(self, key: str) -> None:
        check_name(key, "object key")
        with suppress(_ConflictError):
            self._delete(self._key("objects", key), f"object {key!r}")
