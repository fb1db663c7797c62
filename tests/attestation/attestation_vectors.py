"""The shared manifest's documents, loaded once for the attestation tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from nitrotls.attestation import AttestationDocument, parse_document, unwrap_document


@dataclass(frozen=True)
class Vector:
    """One manifest entry with its document bytes (base64 already decoded)."""

    entry: dict[str, Any]
    data: bytes

    @property
    def name(self) -> str:
        return str(self.entry["file"]).rsplit("/", 1)[-1]

    @property
    def document(self) -> AttestationDocument:
        return parse_document(self.data).document

    @property
    def at(self) -> dt.datetime:
        return self.document.timestamp

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = cbor2.loads(cbor2.loads(self.data)[2])
        return value


def load_vectors(vectors_dir: Path, manifest: list[dict[str, Any]]) -> list[Vector]:
    return [
        Vector(entry, unwrap_document((vectors_dir / entry["file"]).read_bytes()))
        for entry in manifest
    ]
