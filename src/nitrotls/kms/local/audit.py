"""The append-only audit log: one JSON line per request, each chained to the one before.

An entry holds ``v`` (1), ``seq`` (1, 2, …), ``time``, ``caller``, ``op``, ``key``, ``context``
(the encryption context), ``pcrs`` (those presented in a Recipient document), ``decision`` (allow,
deny or error), ``reason`` and ``prev`` (the previous line's ``hash``; 64 zeros on the first line).
Its line is the entry's canonical JSON (sorted keys, no spaces, ASCII) with one more member
appended last, ``hash``: the SHA-256 (hex) of that canonical JSON. Editing a line breaks its own
hash; removing or reordering lines breaks ``prev`` or ``seq``; re-hashing an edited line breaks the
next line's ``prev``. Removing lines from the end is not detectable from the file alone (keep a
copy of the last hash elsewhere if that matters). Plaintext, data keys and key material are never
part of an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nitrotls.kms.local.errors import AuditError

GENESIS = "0" * 64
VERSION = 1
MAX_TEXT = 512
_FIELDS = {"v", "seq", "time", "caller", "op", "key", "context", "pcrs", "decision", "reason"}


@dataclass(frozen=True)
class AuditEvent:
    caller: str
    operation: str
    key: str | None
    context: Mapping[str, str] | None
    pcrs: Mapping[int, bytes] | None
    decision: str  # "allow", "deny" or "error"
    reason: str


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical(entry: Mapping[str, Any]) -> str:
    return _CANONICAL.encode(entry)


def encode_entry(entry: Mapping[str, Any]) -> tuple[str, str]:
    """The line (without newline) for an entry that has no ``hash`` yet, and its hash."""
    body = canonical(entry)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return f'{body[:-1]},"hash":"{digest}"}}', digest


class AuditLog:
    """Appends chained entries to one file; thread-safe; one writer process at a time."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._fsync = fsync
        self._lock = threading.Lock()
        self._seq, self._prev = _tail(path)
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as error:
            raise AuditError(f"cannot open the audit log {path}: {error}") from error

    def record(self, event: AuditEvent) -> None:
        with self._lock:
            entry: dict[str, Any] = {
                "v": VERSION,
                "seq": self._seq + 1,
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "caller": event.caller[:MAX_TEXT],
                "op": event.operation[:MAX_TEXT],
                "key": event.key,
                "context": dict(event.context) if event.context is not None else None,
                "pcrs": _pcrs(event.pcrs),
                "decision": event.decision,
                "reason": event.reason[:MAX_TEXT],
                "prev": self._prev,
            }
            text, digest = encode_entry(entry)
            line = (text + "\n").encode()
            try:
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError(f"short write ({written} of {len(line)} bytes)")
                if self._fsync:
                    os.fsync(self._fd)
            except OSError as error:
                raise AuditError(f"cannot append to the audit log {self.path}: {error}") from error
            self._seq += 1
            self._prev = digest

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _pcrs(pcrs: Mapping[int, bytes] | None) -> dict[str, str] | None:
    if pcrs is None:
        return None
    return {str(index): value.hex() for index, value in sorted(pcrs.items())}


def _tail(path: Path) -> tuple[int, str]:
    """The ``seq`` and ``hash`` of the last line, to continue the chain after a restart."""
    if not path.exists() or path.stat().st_size == 0:
        return 0, GENESIS
    last = _last_line(path)
    if not last.endswith(b"\n"):
        raise AuditError(
            f"the audit log {path} ends with an incomplete line; run "
            "'nitrotls kms audit verify' and move the damaged log aside before starting"
        )
    try:
        entry = json.loads(last)
        return int(entry["seq"]), str(entry["hash"])
    except (ValueError, KeyError, TypeError):
        raise AuditError(
            f"the last line of the audit log {path} is not an audit entry; run "
            "'nitrotls kms audit verify'"
        ) from None


def _last_line(path: Path) -> bytes:
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        block = 4096
        data = b""
        position = end
        while position > 0:
            position = max(0, position - block)
            handle.seek(position)
            data = handle.read(end - position)
            if data.rstrip(b"\n").rfind(b"\n") >= 0:
                break
        body = data[:-1] if data.endswith(b"\n") else data
        return data[body.rfind(b"\n") + 1 :]


@dataclass(frozen=True)
class AuditReport:
    path: Path
    lines: int  # lines checked and found good
    broken_line: int | None  # 1-based number of the first bad line
    problem: str

    @property
    def ok(self) -> bool:
        return self.broken_line is None


def verify_log(path: Path) -> AuditReport:
    """Walk the chain from the first line; report the first line that does not hold."""
    if not path.is_file():
        raise AuditError(f"no audit log at {path}")
    prev = GENESIS
    number = 0
    for number, raw in enumerate(_lines(path), start=1):
        problem = _check_line(raw, number, prev)
        if problem:
            return AuditReport(path, number - 1, number, problem)
        prev = json.loads(raw)["hash"]
    return AuditReport(path, number, None, "")


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from handle


def _check_line(raw: bytes, number: int, prev: str) -> str:
    if not raw.endswith(b"\n"):
        return "the line is incomplete (no newline at the end)"
    try:
        entry = json.loads(raw)
    except ValueError:
        return "the line is not JSON"
    if not isinstance(entry, dict) or not _FIELDS | {"prev", "hash"} <= set(entry):
        return "the line is not an audit entry (fields missing)"
    claimed = entry.pop("hash")
    text, digest = encode_entry(entry)
    if claimed != digest:
        return "the line's content does not match its hash (it was edited)"
    if text.encode() + b"\n" != raw:
        return "the line is not in canonical form (it was edited)"
    if entry["prev"] != prev:
        return "the line does not chain to the line before (a line was edited, removed or moved)"
    if entry["seq"] != number:
        return f"sequence number {entry['seq']} where {number} was expected"
    return ""
