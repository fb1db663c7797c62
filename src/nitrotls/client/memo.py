"""Facts derived from exact DER bytes, remembered so a warm connection does not re-parse them.

Entries are added only after the derivation succeeded, are keyed on the complete bytes (never a
hash or a prefix), and the table is bounded (oldest first out), so a memo can save work but
cannot change an answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")


class Memo(Generic[_K, _V]):
    """A bounded, thread-safe table of ``derive(key)`` results. Reads take no lock."""

    def __init__(self, derive: Callable[[_K], _V], limit: int = 256) -> None:
        self._derive = derive
        self._limit = max(1, limit)
        self._table: dict[_K, _V] = {}
        self._lock = threading.Lock()

    def __call__(self, key: _K) -> _V:
        found = self._table.get(key)
        if found is None:
            found = self._derive(key)  # raises for bad input: nothing is stored
            with self._lock:
                while len(self._table) >= self._limit:
                    del self._table[next(iter(self._table))]
                self._table[key] = found
        return found

    def clear(self) -> None:
        with self._lock:
            self._table.clear()

    def __len__(self) -> int:
        return len(self._table)
