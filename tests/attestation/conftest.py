"""Fixtures for the attestation tests: the real AWS documents and a forged AWS-shaped chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from attestation.attestation_forge import Authority, aws_shaped_specs, build_chain
from attestation.attestation_vectors import Vector, load_vectors
from nitrotls.attestation import Verifier


@pytest.fixture(scope="session")
def vectors(vectors_dir: Path, manifest: list[dict[str, Any]]) -> list[Vector]:
    return load_vectors(vectors_dir, manifest)


@pytest.fixture(scope="session")
def production(vectors: list[Vector]) -> Vector:
    """A real, non-debug AWS document (accepted as of its timestamp)."""
    return next(v for v in vectors if v.name == "script_attestation.bin")


@pytest.fixture(scope="session")
def debug_vector(vectors: list[Vector]) -> Vector:
    return next(v for v in vectors if v.name == "valid-attestation-doc-base64")


@pytest.fixture(scope="session")
def forged_chain() -> list[Authority]:
    """Root, regional, zonal, instance and leaf under a test root (AWS's shape, our keys)."""
    return build_chain(aws_shaped_specs())


@pytest.fixture
def forged_verifier(forged_chain: list[Authority]) -> Verifier:
    return Verifier(trusted_roots=(forged_chain[0].fingerprint,))
