"""Fuzz: whatever bytes arrive, the CMS parser answers with fields or a CMSFormatError."""

from __future__ import annotations

import contextlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nitrotls.kms.cms import build_enveloped, open_enveloped, parse_enveloped
from nitrotls.kms.errors import CMSFormatError

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SEEDS = [
    build_enveloped(os.urandom(32), KEY.public_key(), chunked=True, chunk_size=16),
    build_enveloped(os.urandom(20), KEY.public_key(), chunked=False),
]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        if action == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[position] = draw(st.sampled_from([0x00, 0x80, 0x81, 0x84, 0xFF, 0x30, 0xA0]))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[position]
        else:
            del data[position:]
        if not data:
            break
    return bytes(data)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_cms_errors(data: bytes) -> None:
    with contextlib.suppress(CMSFormatError):
        parse_enveloped(data)


@FUZZ
@given(mutated())
def test_mutated_envelopes_open_or_raise_cms_errors(data: bytes) -> None:
    try:
        result = open_enveloped(data, KEY)
    except CMSFormatError:
        return
    assert isinstance(result, bytearray)


@pytest.mark.parametrize("seed", SEEDS)
def test_seeds_open(seed: bytes) -> None:
    assert len(open_enveloped(seed, KEY)) in (20, 32)
