"""Keys and aliases in SQLite, key material wrapped under the master key.

One server owns a store at a time (an exclusive ``flock`` on ``server.lock``), which lets the
store keep every record in memory, write through to SQLite, and serve reads without touching the
database: records are small and few. Unwrapped key material is kept in memory too, as AES-GCM
contexts, once a key has been used — the master key that unwraps it is in the same memory for
the server's whole life, so the cache adds no exposure, and it spares an unwrap per request. A
mutation (disable, delete, new policy) takes effect on the next request because every mutation
goes through this object.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nitrotls.kms.local.errors import ServiceError, StorageError
from nitrotls.kms.local.masterkey import MasterKey
from nitrotls.kms.local.policy_eval import KeyPolicy, parse_policy
from nitrotls.secrets import wipe

SCHEMA_VERSION = "1"
ENABLED, DISABLED, PENDING_DELETION = "Enabled", "Disabled", "PendingDeletion"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY, account TEXT NOT NULL, region TEXT NOT NULL,
    created REAL NOT NULL, description TEXT NOT NULL, state TEXT NOT NULL,
    deletion_date REAL, pending_days INTEGER, policy TEXT NOT NULL, material BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    account TEXT NOT NULL, name TEXT NOT NULL, key_id TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (account, name)
);
"""


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    account: str
    region: str
    created: float
    description: str
    state: str
    deletion_date: float | None
    pending_days: int | None
    policy: KeyPolicy
    material: bytes = field(repr=False)  # wrapped under the master key

    @cached_property
    def arn(self) -> str:
        """Made once per record (a Decrypt reads it three times, and memo lookups hash it)."""
        return f"arn:aws:kms:{self.region}:{self.account}:key/{self.key_id}"


@dataclass(frozen=True)
class AliasRecord:
    account: str
    name: str
    key_id: str
    created: float
    region: str

    @property
    def arn(self) -> str:
        return f"arn:aws:kms:{self.region}:{self.account}:{self.name}"


class KeyStore:
    """The persistent keys and aliases of one local KMS; thread-safe."""

    def __init__(self, data_dir: Path, region: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.region = region
        self._lock = threading.RLock()
        self._lockfile = _take_lock(data_dir / "server.lock")
        try:
            self._master = MasterKey.load(data_dir)
            self._db = _connect(data_dir / "keys.sqlite3")
            self._check_master()
            self._keys = {r.key_id: r for r in self._load_keys()}
            self._aliases = {(a.account, a.name): a for a in self._load_aliases()}
        except BaseException:
            self._lockfile.close()
            raise
        self._ciphers: dict[str, AESGCM] = {}

    def close(self) -> None:
        with self._lock:
            self._ciphers.clear()
            self._db.close()
            self._lockfile.close()

    # -- keys -----------------------------------------------------------------------------

    def create_key(self, account: str, description: str, policy: KeyPolicy) -> KeyRecord:
        key_id = str(uuid.uuid4())
        material = bytearray(os.urandom(32))
        try:
            wrapped = self._master.wrap(key_id, material)
        finally:
            wipe(material)
        record = KeyRecord(
            key_id,
            account,
            self.region,
            time.time(),
            description,
            ENABLED,
            None,
            None,
            policy,
            wrapped,
        )
        with self._lock, self._write() as db:
            db.execute(
                "INSERT INTO keys VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    key_id,
                    account,
                    record.region,
                    record.created,
                    description,
                    ENABLED,
                    None,
                    None,
                    policy.text,
                    wrapped,
                ),
            )
            self._keys[key_id] = record
        return record

    def get(self, key_id: str) -> KeyRecord | None:
        with self._lock:
            record = self._keys.get(key_id)
            if record is not None and _expired(record):
                self._purge(record)
                return None
            return record

    def keys(self, account: str) -> list[KeyRecord]:
        with self._lock:
            found = [self.get(key_id) for key_id in list(self._keys)]
        live = [r for r in found if r is not None and r.account == account]
        return sorted(live, key=lambda r: (r.created, r.key_id))

    def set_state(self, record: KeyRecord, state: str) -> KeyRecord:
        return self._update(replace(record, state=state, deletion_date=None, pending_days=None))

    def schedule_deletion(self, record: KeyRecord, days: int) -> KeyRecord:
        when = time.time() + days * 86400
        return self._update(
            replace(record, state=PENDING_DELETION, deletion_date=when, pending_days=days)
        )

    def set_policy(self, record: KeyRecord, policy: KeyPolicy) -> KeyRecord:
        return self._update(replace(record, policy=policy))

    def cipher(self, record: KeyRecord) -> AESGCM:
        """The AES-GCM context of a key's material, unwrapped once and kept (see module doc)."""
        with self._lock:
            aead = self._ciphers.get(record.key_id)
            if aead is None:
                material = self._master.unwrap(record.key_id, record.material)
                try:
                    aead = AESGCM(bytes(material))
                finally:
                    wipe(material)
                self._ciphers[record.key_id] = aead
            return aead

    def _update(self, updated: KeyRecord) -> KeyRecord:
        with self._lock, self._write() as db:
            db.execute(
                "UPDATE keys SET state=?, deletion_date=?, pending_days=?, policy=? WHERE key_id=?",
                (
                    updated.state,
                    updated.deletion_date,
                    updated.pending_days,
                    updated.policy.text,
                    updated.key_id,
                ),
            )
            self._keys[updated.key_id] = updated
        return updated

    def _purge(self, record: KeyRecord) -> None:
        with self._write() as db:
            db.execute("DELETE FROM keys WHERE key_id=?", (record.key_id,))
            db.execute("DELETE FROM aliases WHERE key_id=?", (record.key_id,))
        self._keys.pop(record.key_id, None)
        self._ciphers.pop(record.key_id, None)
        for name, alias in list(self._aliases.items()):
            if alias.key_id == record.key_id:
                del self._aliases[name]

    # -- aliases --------------------------------------------------------------------------

    def create_alias(self, account: str, name: str, key_id: str) -> AliasRecord | None:
        """The new alias, or None when the name is taken in that account."""
        alias = AliasRecord(account, name, key_id, time.time(), self.region)
        with self._lock:
            if (account, name) in self._aliases:
                return None
            with self._write() as db:
                db.execute(
                    "INSERT INTO aliases VALUES (?,?,?,?)",
                    (account, name, key_id, alias.created),
                )
            self._aliases[(account, name)] = alias
        return alias

    def alias(self, account: str, name: str) -> AliasRecord | None:
        with self._lock:
            alias = self._aliases.get((account, name))
            if alias is not None and self.get(alias.key_id) is None:
                return None
            return alias

    def aliases(self, account: str, key_id: str | None = None) -> list[AliasRecord]:
        with self._lock:
            found = [a for a in self._aliases.values() if a.account == account]
            found = [a for a in found if self.get(a.key_id) is not None]
        if key_id is not None:
            found = [a for a in found if a.key_id == key_id]
        return sorted(found, key=lambda a: a.name)

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._db:
                yield self._db
        except sqlite3.Error as error:
            raise StorageError(f"the key store could not be written: {error}") from error

    def _check_master(self) -> None:
        with self._lock, self._write() as db:
            db.executescript(_SCHEMA)
            rows = dict(db.execute("SELECT name, value FROM meta").fetchall())
            if not rows:
                db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("schema", SCHEMA_VERSION), ("master_check", self._master.check_value)],
                )
                return
        if rows.get("schema") != SCHEMA_VERSION:
            raise StorageError(
                f"the key store has schema {rows.get('schema')!r}; this version reads "
                f"{SCHEMA_VERSION!r}"
            )
        if rows.get("master_check") != self._master.check_value:
            raise StorageError(
                f"the master key from {self._master.origin} is not the one this key store was "
                "created with (set the original $NITROTLS_KMS_MASTER_KEY or restore master.key)"
            )

    def _load_keys(self) -> Iterator[KeyRecord]:
        rows = self._db.execute(
            "SELECT key_id, account, region, created, description, state, deletion_date, "
            "pending_days, policy, material FROM keys"
        ).fetchall()
        for (
            key_id,
            account,
            region,
            created,
            description,
            state,
            due,
            days,
            policy,
            wrapped,
        ) in rows:
            yield KeyRecord(
                key_id,
                account,
                region,
                created,
                description,
                state,
                due,
                days,
                _stored_policy(key_id, policy),
                bytes(wrapped),
            )

    def _load_aliases(self) -> Iterator[AliasRecord]:
        rows = self._db.execute("SELECT account, name, key_id, created FROM aliases").fetchall()
        for account, name, key_id, created in rows:
            yield AliasRecord(account, name, key_id, created, self.region)


def _stored_policy(key_id: str, text: str) -> KeyPolicy:
    try:
        return parse_policy(text)
    except ServiceError as error:
        raise StorageError(f"the stored policy of key {key_id} no longer parses: {error}") from None


def _expired(record: KeyRecord) -> bool:
    return (
        record.state == PENDING_DELETION
        and record.deletion_date is not None
        and record.deletion_date <= time.time()
    )


def _connect(path: Path) -> sqlite3.Connection:
    fresh = not path.exists()
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error as error:
        raise StorageError(f"cannot open the key store {path}: {error}") from error
    if fresh:
        path.chmod(0o600)
    return db


def _take_lock(path: Path) -> IO[bytes]:
    handle = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StorageError(
            f"another nitrotls KMS server is using {path.parent}; stop it, or give this one "
            "its own data directory"
        ) from None
    return handle
