"""Deterministic CBOR (RFC 8949 §4.2.1 core deterministic encoding).

Every hash nitrotls signs or binds is taken over these bytes, so two honest encoders must agree
byte for byte. For the maps nitrotls builds (text keys shorter than 24 bytes, integers, byte and
text strings, arrays, maps) cbor2's canonical mode yields exactly the core deterministic form:
shortest heads, definite lengths, and keys sorted by their encoded bytes.
"""

from __future__ import annotations

from typing import Any

import cbor2


def deterministic_dumps(value: Any) -> bytes:
    """Encode ``value`` deterministically; floats are refused because nitrotls never signs them."""
    _reject_floats(value)
    return bytes(cbor2.dumps(value, canonical=True))


def head(major: int, argument: int) -> bytes:
    """The shortest CBOR head (RFC 8949 §3) for a major type (0x00 uint, 0x40 bytes, 0x60 text,
    0xA0 map, ...) and its argument: for encoders that assemble known shapes by hand."""
    if argument < 24:
        return bytes((major | argument,))
    if argument < 0x100:
        return bytes((major | 24, argument))
    if argument < 0x10000:
        return bytes((major | 25,)) + argument.to_bytes(2, "big")
    if argument < 0x100000000:
        return bytes((major | 26,)) + argument.to_bytes(4, "big")
    return bytes((major | 27,)) + argument.to_bytes(8, "big")


def _reject_floats(value: Any) -> None:
    if isinstance(value, float):
        raise TypeError("deterministic CBOR in nitrotls carries no floating-point values")
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_floats(key)
            _reject_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _reject_floats(item)
