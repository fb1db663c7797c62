"""nitrotls.secrets: buffers are zeroed in place, never replaced, and never shown."""

from __future__ import annotations

import array

import pytest

from nitrotls.secrets import SecretBuffer, wipe


def test_wipe_zeroes_the_same_memory() -> None:
    secret = bytearray(b"\x5a" * 4096)
    view = memoryview(secret)  # a live view sees the same memory, so a replacement would show
    wipe(secret)
    assert secret == bytearray(4096)
    assert bytes(view) == bytes(4096)
    assert len(secret) == 4096


def test_wipe_a_slice_leaves_the_rest() -> None:
    data = bytearray(b"keepSECRETkeep")
    wipe(memoryview(data)[4:10])
    assert data == b"keep\x00\x00\x00\x00\x00\x00keep"


def test_wipe_multibyte_items_and_empty() -> None:
    words = array.array("I", [0xFFFFFFFF] * 8)
    wipe(memoryview(words))
    assert list(words) == [0] * 8
    wipe(bytearray())  # nothing to do, no error


def test_wipe_refuses_read_only() -> None:
    with pytest.raises(TypeError, match="read-only"):
        wipe(memoryview(b"immutable"))


def test_secret_buffer_wipes_on_exit_and_hides_its_bytes() -> None:
    source = bytearray(b"data key bytes")
    with SecretBuffer.take(source) as buffer:
        assert source == bytearray(len(source))  # the source was wiped when taken
        inner = buffer.data
        assert inner == b"data key bytes"
        assert "data key" not in repr(buffer)
    assert inner == bytearray(len(inner))
