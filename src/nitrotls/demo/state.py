"""What one demo run leaves for the next: the KMS key id, how the bundle was made, timings.

``demo/state.json`` holds no secret (the key id is a name; the sealed key lives in the bundle).
A damaged file is ignored: the next run then makes a new key and bundle, as a first run would.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from nitrotls.nsm import write_atomic

MAX_RUNS_KEPT = 10


@dataclass(frozen=True)
class RunRecord:
    """One finished run: seconds to a verified connection, and whether it issued a bundle."""

    started: str
    seconds: float
    issued: bool
    ca: str


@dataclass(frozen=True)
class DemoState:
    kms_key_id: str | None = None
    issued_with: str | None = None  # "<ca kind>:<generator PCR0>" of the current bundle
    runs: tuple[RunRecord, ...] = field(default_factory=tuple)

    @classmethod
    def load(cls, path: Path) -> DemoState:
        try:
            data: Any = json.loads(path.read_text())
            runs = tuple(RunRecord(**run) for run in data.get("runs", []))
            key_id = data.get("kms_key_id")
            issued_with = data.get("issued_with")
            if not isinstance(key_id, str | None) or not isinstance(issued_with, str | None):
                return cls()
            return cls(key_id, issued_with, runs)
        except (OSError, ValueError, TypeError, AttributeError):
            return cls()

    def save(self, path: Path) -> None:
        data = {
            "kms_key_id": self.kms_key_id,
            "issued_with": self.issued_with,
            "runs": [asdict(run) for run in self.runs[-MAX_RUNS_KEPT:]],
        }
        write_atomic(path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o600)

    def with_run(self, run: RunRecord) -> DemoState:
        return replace(self, runs=(*self.runs, run)[-MAX_RUNS_KEPT:])

    @property
    def last_run(self) -> RunRecord | None:
        return self.runs[-1] if self.runs else None
