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
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

from nitrotls.kms.local.errors import AuditError

GENESIS = "0" * 64
VERSION = 1
MAX_TEXT = 512
_FIELDS = {"v", "seq", "time", "caller", "op", "key", "context", "pcrs", "decision", "reason"}
MEMO_ENTRIES = 64  # per memo; a full memo starts over
MEMO_FRAGMENT = 4096  # longer fragments are never remembered


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


def entry_for(event: AuditEvent, seq: int, stamp: str, prev: str) -> dict[str, Any]:
    """The entry as a dict: what ``encode_entry`` turns into the line (the reference form)."""
    return {
        "v": VERSION,
        "seq": seq,
        "time": stamp,
        "caller": event.caller[:MAX_TEXT],
        "op": event.operation[:MAX_TEXT],
        "key": event.key,
        "context": dict(event.context) if event.context is not None else None,
        "pcrs": _pcrs(event.pcrs),
        "decision": event.decision,
        "reason": event.reason[:MAX_TEXT],
        "prev": prev,
    }


class LineEncoder:
    """``encode_entry(entry_for(...))`` at a fraction of the cost, byte for byte the same.

    Every request writes a line, so the line is put together by hand in sorted-key order from
    JSON fragments instead of sorting and encoding a fresh dict. The fragments of values that
    repeat from request to request (caller, operation, key, reason, context, PCRs) are remembered
    by value in small bounded memos, learnt from allowed requests only so that refused callers
    cannot churn them. Values not of the exact types the hand-built form covers (``bool`` PCR
    indexes, ``str`` or ``bytes`` subclasses, …) get ``None``: the caller then takes the reference
    path. Not thread-safe: ``AuditLog`` calls it under its lock.
    """

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}
        self._contexts: dict[tuple[tuple[str, str], ...], str] = {}
        self._pcrs: dict[tuple[tuple[int, bytes], ...], str] = {}

    def encode(self, event: AuditEvent, seq: int, stamp: str, prev: str) -> tuple[str, str] | None:
        """The line (without newline) and its hash, or None to ask for the reference path."""
        encoded = self.encode_line(event, seq, stamp, prev)
        return None if encoded is None else (encoded[0][:-1].decode(), encoded[1])

    def encode_line(
        self, event: AuditEvent, seq: int, stamp: str, prev: str
    ) -> tuple[bytes, str] | None:
        """The line as written (newline included) and its hash, or None as ``encode`` gives."""
        caller, operation, key = event.caller, event.operation, event.key
        decision, reason = event.decision, event.reason
        if not (
            type(caller) is str
            and type(operation) is str
            and (key is None or type(key) is str)
            and type(decision) is str
            and type(reason) is str
            and type(seq) is int
            and type(stamp) is str
            and type(prev) is str
        ):
            return None
        keep = decision == "allow"
        context = self._context(event.context, keep)
        pcrs = self._pcr_fragment(event.pcrs, keep)
        if context is None or pcrs is None:
            return None
        texts = self._texts
        caller_json = texts.get(caller) or self._text(caller[:MAX_TEXT], keep)
        decision_json = texts.get(decision) or self._text(decision, keep)
        key_json = "null" if key is None else texts.get(key) or self._text(key, keep)
        operation_json = texts.get(operation) or self._text(operation[:MAX_TEXT], keep)
        reason_json = texts.get(reason) or self._text(reason[:MAX_TEXT], keep)
        head = (
            f'{{"caller":{caller_json},"context":{context},"decision":{decision_json},'
            f'"key":{key_json},"op":{operation_json},"pcrs":{pcrs},'
            f'"prev":{encode_basestring_ascii(prev)},"reason":{reason_json},"seq":{seq},'
            f'"time":{encode_basestring_ascii(stamp)},"v":{VERSION}'
        )
        body = head.encode()  # ASCII: every fragment is
        hasher = hashlib.sha256(body)
        hasher.update(b"}")
        digest = hasher.hexdigest()
        return b"".join((body, b',"hash":"', digest.encode(), b'"}\n')), digest

    def _text(self, text: str, keep: bool) -> str:
        # Only strings within MAX_TEXT are remembered, so a hit never needs cutting.
        fragment = encode_basestring_ascii(text)
        if keep and len(text) <= MAX_TEXT:
            _remember(self._texts, text, fragment)
        return fragment

    def _context(self, context: Mapping[str, str] | None, keep: bool) -> str | None:
        if context is None:
            return "null"
        items = tuple(context.items())
        for name, value in items:  # a loop: cheaper than all() over a generator
            if type(name) is not str or type(value) is not str:
                return None
        fragment = self._contexts.get(items)
        if fragment is None:
            fragment = canonical(dict(items))
            if keep:
                _remember(self._contexts, items, fragment)
        return fragment

    def _pcr_fragment(self, pcrs: Mapping[int, bytes] | None, keep: bool) -> str | None:
        if pcrs is None:
            return "null"
        items = tuple(pcrs.items())
        for index, value in items:  # exact types: a bool index would hit the memo entry of 1
            if type(index) is not int or type(value) is not bytes:
                return None
        fragment = self._pcrs.get(items)
        if fragment is None:
            fragment = canonical(_pcr_hex(dict(items)))
            if keep:
                _remember(self._pcrs, items, fragment)
        return fragment


def _remember(memo: dict[Any, str], key: Any, fragment: str) -> None:
    if len(fragment) > MEMO_FRAGMENT:
        return
    if len(memo) >= MEMO_ENTRIES:
        memo.clear()
    memo[key] = fragment


_MILLISECONDS = tuple(f".{n:03d}+00:00" for n in range(1000))


class Timestamps:
    """``datetime.now(UTC).isoformat(timespec="milliseconds")``, with the per-second part cached."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        return self.format(time.time_ns())

    def format(self, nanoseconds: int) -> str:
        """The stamp for a time in nanoseconds since the epoch (cut to milliseconds, as
        ``datetime`` cuts to microseconds and ``isoformat`` to milliseconds)."""
        second, rest = divmod(nanoseconds, 1_000_000_000)
        if second != self._second:
            moment = datetime.fromtimestamp(second, UTC).replace(tzinfo=None)
            self._prefix = moment.isoformat(timespec="seconds")
            self._second = second
        return self._prefix + _MILLISECONDS[rest // 1_000_000]


class AuditLog:
    """Appends chained entries to one file; thread-safe; one writer process at a time."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._fsync = fsync
        self._lock = threading.Lock()
        self._lines = LineEncoder()
        self._clock = Timestamps()
        self._seq, self._prev = _tail(path)
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as error:
            raise AuditError(f"cannot open the audit log {path}: {error}") from error

    def record(self, event: AuditEvent) -> None:
        with self._lock:
            seq = self._seq + 1
            stamp = self._clock.now()
            encoded = self._lines.encode_line(event, seq, stamp, self._prev)
            if encoded is None:
                text, digest = encode_entry(entry_for(event, seq, stamp, self._prev))
                line = (text + "\n").encode()
            else:
                line, digest = encoded
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
    return None if pcrs is None else _pcr_hex(pcrs)


def _pcr_hex(pcrs: Mapping[int, bytes]) -> dict[str, str]:
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
