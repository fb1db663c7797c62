"""Verdicts remembered per (host, port, SPKI), never past the document's chain or max age.

Keyed on the SPKI the *new* connection presents: a different certificate (a relay, a rotated
bundle) is never covered by an earlier proof.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from nitrotls.client.verdict import Verdict


class VerdictCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int, bytes], Verdict] = {}

    def get(self, host: str, port: int, spki_sha384: bytes) -> Verdict | None:
        key = (host, port, spki_sha384)
        now = datetime.now(UTC)
        with self._lock:
            verdict = self._entries.get(key)
            if verdict is not None and verdict.valid_until <= now:
                del self._entries[key]
                return None
            return verdict

    def put(self, verdict: Verdict) -> None:
        with self._lock:
            self._entries[(verdict.host, verdict.port, verdict.spki_sha384)] = verdict

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
