"""Mutated real documents only ever raise the module's own errors, and never hang."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.attestation_vectors import Vector, load_vectors
from nitrotls.attestation import AttestationError, Verifier, parse_document
from nitrotls.attestation.summary import summary


@pytest.fixture(scope="module")
def fuzz_vectors(vectors_dir: Path, manifest: list[dict[str, Any]]) -> list[Vector]:
    return load_vectors(vectors_dir, manifest)


@pytest.fixture(scope="module")
def fuzz_verifier() -> Verifier:
    return Verifier()  # shared: the cache must stay correct under hostile input too


def _flip(data: bytes, positions: list[int]) -> bytes:
    mutated = bytearray(data)
    for position in positions:
        mutated[position % len(mutated)] ^= 1 << (position % 8)
    return bytes(mutated)


@st.composite
def mutations(draw: st.DrawFn, count: int) -> tuple[int, bytes | None, str, Any]:
    """(which document, another document's bytes for splicing or None, kind, parameters)."""
    index = draw(st.integers(0, count - 1))
    kind = draw(st.sampled_from(["flip", "truncate", "splice", "insert", "overwrite"]))
    if kind == "flip":
        return index, None, kind, draw(st.lists(st.integers(0, 1 << 20), min_size=1, max_size=4))
    if kind == "truncate":
        return index, None, kind, draw(st.integers(0, 1 << 20))
    if kind == "splice":
        return (
            index,
            None,
            kind,
            (
                draw(st.integers(0, count - 1)),
                draw(st.integers(0, 1 << 20)),
                draw(st.integers(0, 1 << 20)),
            ),
        )
    chunk = draw(st.binary(min_size=1, max_size=16))
    return index, None, kind, (draw(st.integers(0, 1 << 20)), chunk)


def _mutate(vectors: list[Vector], index: int, kind: str, parameters: Any) -> bytes:
    data = vectors[index].data
    if kind == "flip":
        return _flip(data, parameters)
    if kind == "truncate":
        return data[: parameters % len(data)]
    if kind == "splice":
        other, cut_here, cut_there = parameters
        donor = vectors[other % len(vectors)].data
        return data[: cut_here % len(data)] + donor[cut_there % len(donor) :]
    position, chunk = parameters
    position %= len(data)
    if kind == "insert":
        return data[:position] + chunk + data[position:]
    return data[:position] + chunk + data[position + len(chunk) :]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=mutations(64))  # document indices are taken modulo the manifest's length
def test_mutated_documents_raise_only_attestation_errors(
    fuzz_vectors: list[Vector], fuzz_verifier: Verifier, case: tuple[int, Any, str, Any]
) -> None:
    index, _, kind, parameters = case
    original = fuzz_vectors[index % len(fuzz_vectors)]
    data = _mutate(fuzz_vectors, index % len(fuzz_vectors), kind, parameters)
    try:
        parsed = parse_document(data)
        summary(parsed.document)  # inspection must cope with whatever parses
        fuzz_verifier.authenticate(data, at=original.at)
    except AttestationError:
        return
    # Accepted: then the signed content must be exactly what AWS signed.
    genuine = parse_document(original.data)
    assert (parsed.protected, parsed.payload) == (genuine.protected, genuine.payload)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=512))
def test_random_bytes_raise_only_attestation_errors(data: bytes) -> None:
    with contextlib.suppress(AttestationError):
        parse_document(data)
