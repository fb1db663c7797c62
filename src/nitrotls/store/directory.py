"""The default store: a directory on the local file system.

Layout under the root (names are validated, so no path ever leaves it)::

    bundles/<name>/objects/<id>   immutable bundle objects (published by hard link: never replaced)
    bundles/<name>/latest         the id of the newest bundle (replaced by rename)
    bundles/<name>/.lock          flock serialising compare-and-swap on ``latest``
    leases/<name>                 JSON {holder, token, expires_at}, under leases/.<name>.lock
    challenges/<token>            HTTP-01 key authorizations
    objects/<key>                 small opaque objects (the sealed ACME account)

Files starting with ``.`` are temporaries or locks, never valid names.

Writers (the generator, ``bundle publish``) create the tree on first use. A reader opened with
``read_only=True`` (``nitrotls serve``) creates nothing and writes nothing: a store path that can
never be a directory is a :class:`StoreSpecError` at once, and a directory that does not exist
(yet) makes every read a :class:`StoreUnavailableError` naming it, never "no bundle".
"""

from __future__ import annotations

import builtins
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from nitrotls import home
from nitrotls.store import files
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
    LeaseHeldError,
    LeaseLostError,
    StoreConflictError,
    StoreCorruptError,
    StoreSpecError,
    StoreTooLargeError,
    StoreUnavailableError,
)

_POINTER = "latest"


class DirectoryStore(BundleStore):
    """A :class:`BundleStore` in a directory: atomic renames, fcntl locks, fsync everywhere."""

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
    ) -> None:
        self._clock = clock
        self.read_only = read_only
        if read_only:
            self.root = (
                Path(path).expanduser()
                if path is not None
                else home.data_dir(create=False) / "store"
            )
            check_reader_root(self.root)
            return
        self.root = Path(path).expanduser() if path is not None else home.sub_dir("store")
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as error:
            raise StoreUnavailableError(
                f"cannot create store directory {self.root}: {error}"
            ) from error
        if not self.root.is_dir():
            raise StoreUnavailableError(f"store path {self.root} exists but is not a directory")

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    # -- helpers -----------------------------------------------------------------------------

    def _dir(self, *parts: str) -> Path:
        self._writable()
        path = self.root.joinpath(*parts)
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as error:
            raise StoreUnavailableError(f"cannot create {path}: {error}") from error
        return path

    def _writable(self) -> None:
        if self.read_only:
            raise StoreUnavailableError(
                f"the store {self.root} was opened read-only (by a reader such as "
                "`nitrotls serve`): it never writes; publish with the generator"
            )

    def _require_root(self) -> None:
        """A reader's store must exist: its absence is an outage, not an empty store."""
        if not self.read_only:
            return
        with self._io("checking the store directory"):
            if self.root.is_dir():
                return
        raise StoreUnavailableError(
            f"store directory {self.root} does not exist: nothing has been published there "
            "yet, or the path (--store / [store] spec) is wrong. Readers never create it; "
            "the generator does when it first publishes"
        )

    @contextmanager
    def _io(self, what: str) -> Iterator[None]:
        """Turn OS failures into one typed, actionable error."""
        try:
            yield
        except TimeoutError as error:
            raise StoreUnavailableError(f"{what}: {error}; is another process stuck?") from error
        except OSError as error:
            raise StoreUnavailableError(
                f"{what} in {self.root}: {error.strerror or error}"
            ) from error

    def _read(self, path: Path, limit: int, what: str) -> bytes | None:
        try:
            with self._io(f"reading {what}"):
                data = files.read_bounded(path, limit)
        except ValueError as error:
            raise StoreTooLargeError(f"{what} at {path} is larger than {limit} bytes") from error
        if data is None:
            self._require_root()
        return data

    def _pointer(self, name: str) -> str | None:
        raw = self._read(
            self.root / "bundles" / name / _POINTER, 1024, f"latest pointer of {name!r}"
        )
        return None if raw is None else decode_pointer(raw, f"of {name!r}")

    # -- bundles -----------------------------------------------------------------------------

    def put(self, name: str, bundle_id: str, data: bytes, *, expected_previous: str | None) -> None:
        check_name(name)
        check_name(bundle_id, "bundle id")
        if expected_previous is not None:
            check_name(expected_previous, "bundle id")
        payload = check_size(data, MAX_BUNDLE_BYTES, "bundle")
        base = self._dir("bundles", name)
        objects = self._dir("bundles", name, "objects")
        with self._io(f"publishing bundle {bundle_id!r} of {name!r}"), files.locked(base / ".lock"):
            current = self._pointer(name)
            if current != expected_previous:
                raise StoreConflictError(
                    f"latest bundle of {name!r} is {current!r}, expected {expected_previous!r}: "
                    "another writer published first; reload and retry"
                )
            try:
                files.atomic_write(objects / bundle_id, payload, exclusive=True)
            except FileExistsError:
                raise BundleExistsError(
                    f"bundle id {bundle_id!r} already exists under {name!r}; use a fresh id"
                ) from None
            files.atomic_write(base / _POINTER, f"{bundle_id}\n".encode())

    def latest(self, name: str) -> Latest | None:
        check_name(name)
        current = self._pointer(name)
        if current is None:
            return None
        data = self._read_bundle(name, current)
        if data is None:
            raise StoreCorruptError(
                f"latest pointer of {name!r} names bundle {current!r}, which is missing"
            )
        return Latest(current, data)

    def _read_bundle(self, name: str, bundle_id: str) -> bytes | None:
        path = self.root / "bundles" / name / "objects" / bundle_id
        return self._read(path, MAX_BUNDLE_BYTES, f"bundle {bundle_id!r}")

    def get(self, name: str, bundle_id: str) -> bytes:
        check_name(name)
        check_name(bundle_id, "bundle id")
        data = self._read_bundle(name, bundle_id)
        if data is None:
            raise BundleNotFoundError(f"no bundle {bundle_id!r} under {name!r} in {self.root}")
        return data

    def list(self, name: str) -> builtins.list[str]:
        check_name(name)
        return self._listdir(self.root / "bundles" / name / "objects")

    def names(self) -> builtins.list[str]:
        found = self._listdir(self.root / "bundles")
        return [name for name in found if (self.root / "bundles" / name / _POINTER).is_file()]

    def _listdir(self, path: Path) -> builtins.list[str]:
        with self._io(f"listing {path}"):
            try:
                entries = [entry.name for entry in path.iterdir()]
            except FileNotFoundError:
                entries = []
        if not entries:
            self._require_root()
        return sorted(entry for entry in entries if not entry.startswith("."))

    # -- leases ------------------------------------------------------------------------------

    def _lease_state(self, name: str) -> Lease | None:
        raw = self._read(self.root / "leases" / name, 4096, f"lease of {name!r}")
        return None if raw is None else decode_lease(name, raw, f"of {name!r}")

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease:
        check_name(name)
        check_holder(holder)
        seconds = check_ttl(ttl)
        leases = self._dir("leases")
        with self._io(f"acquiring lease {name!r}"), files.locked(leases / f".{name}.lock"):
            now = self._clock()
            current = self._lease_state(name)
            if current is not None and current.holder != holder and current.expires_at > now:
                raise LeaseHeldError(
                    f"lease {name!r} is held by {current.holder!r} for another "
                    f"{current.expires_at - now:.1f} s; retry later"
                )
            lease = Lease(name, holder, new_token(), now + seconds)
            files.atomic_write(leases / name, encode_lease(lease))
        return lease

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        check_name(lease.name)
        seconds = check_ttl(ttl)
        leases = self._dir("leases")
        with (
            self._io(f"renewing lease {lease.name!r}"),
            files.locked(leases / f".{lease.name}.lock"),
        ):
            current = self._lease_state(lease.name)
            if current is None or current.token != lease.token:
                holder = "nobody" if current is None else repr(current.holder)
                raise LeaseLostError(
                    f"lease {lease.name!r} is no longer held by {lease.holder!r} (now: {holder}); "
                    "stop work that needs it"
                )
            renewed = Lease(lease.name, lease.holder, lease.token, self._clock() + seconds)
            files.atomic_write(leases / lease.name, encode_lease(renewed))
        return renewed

    def release_lease(self, lease: Lease) -> None:
        check_name(lease.name)
        leases = self._dir("leases")
        with (
            self._io(f"releasing lease {lease.name!r}"),
            files.locked(leases / f".{lease.name}.lock"),
        ):
            current = self._lease_state(lease.name)
            if current is not None and current.token == lease.token:
                (leases / lease.name).unlink(missing_ok=True)
                files.fsync_dir(leases)

    # -- challenges and objects --------------------------------------------------------------

    def put_challenge(self, token: str, key_authorization: str) -> None:
        check_token(token)
        value = check_challenge_value(key_authorization)
        with self._io(f"writing challenge {token!r}"):
            files.atomic_write(self._dir("challenges") / token, value)

    def get_challenge(self, token: str) -> str | None:
        check_token(token)
        raw = self._read(self.root / "challenges" / token, MAX_CHALLENGE_BYTES, "challenge")
        if raw is None:
            return None
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as error:
            raise StoreCorruptError(f"challenge {token!r} is not ASCII") from error

    def delete_challenge(self, token: str) -> None:
        check_token(token)
        self._writable()
        with self._io(f"deleting challenge {token!r}"):
            (self.root / "challenges" / token).unlink(missing_ok=True)

    def put_object(self, key: str, data: bytes) -> None:
        check_name(key, "object key")
        payload = check_size(data, MAX_OBJECT_BYTES, "object")
        with self._io(f"writing object {key!r}"):
            files.atomic_write(self._dir("objects") / key, payload, mode=0o600)

    def get_object(self, key: str) -> bytes | None:
        check_name(key, "object key")
        return self._read(self.root / "objects" / key, MAX_OBJECT_BYTES, f"object {key!r}")

    def delete_object(self, key: str) -> None:
        check_name(key, "object key")
        self._writable()
        with self._io(f"deleting object {key!r}"):
            (self.root / "objects" / key).unlink(missing_ok=True)


def check_reader_root(root: Path) -> None:
    """Refuse, as a configuration error, a reader's store path that can never be a directory
    (a file, or a path through one). A path that does not exist yet is left to the reads: the
    store is unavailable until the generator creates it, which start-up retries wait for."""
    try:
        mode = root.stat().st_mode
    except NotADirectoryError:
        blocker = next((p for p in reversed(root.parents) if _is_non_dir(p)), None)
        where = f"{blocker} is not a directory" if blocker else "a parent is not a directory"
        raise StoreSpecError(
            f"store path {root} cannot be a directory: {where}. "
            "Give dir:PATH of the directory the generator publishes to"
        ) from None
    except OSError:  # missing, or not ours to look at: the reads say so (and are retried)
        return
    if not stat.S_ISDIR(mode):
        raise StoreSpecError(
            f"store path {root} is {_describe_mode(mode)}, not a directory. "
            "Give dir:PATH of the directory the generator publishes to"
        )


def _is_non_dir(path: Path) -> bool:
    try:
        return not stat.S_ISDIR(path.stat().st_mode)
    except OSError:
        return False


def _describe_mode(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "a device or other special file"
