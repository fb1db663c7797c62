"""Accepted measurements from the files operators already have.

Three shapes are read: ``nitro-cli describe-eif`` and ``nitro-cli build-enclave`` output (PCRs
under ``"Measurements"``), ``nitrotls attestation measure`` output (the same shape), and a plain
``{"PCR0": hex, ...}`` map. Anything else is refused rather than half-read, because a silently
dropped PCR would widen the policy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from nitrotls.attestation.document import MAX_PCRS, PCR_LENGTHS
from nitrotls.attestation.errors import PCRFileError

MAX_FILE_BYTES = 1 << 20
_PCR_KEY = re.compile(r"PCR([0-9]{1,2})")


def load_pcrs_file(path: str | Path) -> dict[int, bytes]:
    """Read a measurements file into ``{index: value}``; raise :class:`PCRFileError` if unusable."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise PCRFileError(f"{path}: cannot read measurements file ({error.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise PCRFileError(f"{path}: expected a small JSON file, found more than 1 MiB")
    try:
        return parse_pcrs_json(raw)
    except PCRFileError as error:
        raise PCRFileError(f"{path}: {error}") from None


def parse_pcrs_json(raw: bytes | str) -> dict[int, bytes]:
    """Parse measurements JSON text in any of the accepted shapes."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise PCRFileError(f"expected JSON, found invalid text ({error})"[:200]) from None
    if not isinstance(value, dict):
        raise PCRFileError(f"expected a JSON object, found {type(value).__name__}")
    if "Measurements" in value:
        value = value["Measurements"]
        if not isinstance(value, dict):
            raise PCRFileError('expected "Measurements" to be an object of PCRs')
    return _pcr_map(value)


def _pcr_map(value: dict[str, Any]) -> dict[int, bytes]:
    pcrs: dict[int, bytes] = {}
    for key, item in value.items():
        if key == "HashAlgorithm":
            _check_algorithm(item)
            continue
        match = _PCR_KEY.fullmatch(key)
        if match is None or int(match.group(1)) >= MAX_PCRS:
            raise PCRFileError(f"expected keys PCR0 to PCR31 (and HashAlgorithm), found {key!r}")
        pcrs[int(match.group(1))] = _pcr_value(key, item)
    if not pcrs:
        raise PCRFileError("expected at least one PCR, found none")
    return pcrs


def _check_algorithm(item: Any) -> None:
    # nitro-cli prints "Sha384 { ... }"; other tools print "SHA384" or "Sha384".
    if not isinstance(item, str) or not item.lower().startswith("sha384"):
        raise PCRFileError(f"HashAlgorithm: expected Sha384, found {str(item)[:40]!r}")


def _pcr_value(key: str, item: Any) -> bytes:
    try:
        if not isinstance(item, str):
            raise ValueError
        pcr = bytes.fromhex(item)
    except ValueError:
        raise PCRFileError(f"{key}: expected a hex string, found {str(item)[:40]!r}") from None
    if len(pcr) not in PCR_LENGTHS:
        raise PCRFileError(f"{key}: expected 32, 48 or 64 bytes, found {len(pcr)}")
    return pcr
