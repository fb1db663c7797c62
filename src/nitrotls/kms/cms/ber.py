"""A small, strict BER reader and writer: just what KMS's CMS envelopes need.

Why our own: asn1crypto (unmaintained since 2022) parses lazily and is lenient about what it
skips, and pyasn1's BER decoder accepts far more than KMS ever sends; neither lets us refuse
everything else cheaply. This walker reads one TLV tree eagerly with hard limits: low tag numbers
only, a depth limit, lengths checked against the bytes that are really there, indefinite lengths
only on constructed values and closed by an exact end-of-contents, minimal length encodings, and
no trailing bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from nitrotls.kms.errors import CMSFormatError

MAX_DEPTH = 16
MAX_INPUT = 64 * 1024

UNIVERSAL = 0
CONTEXT = 2

TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_NULL = 0x05
TAG_OID = 0x06
TAG_SEQUENCE = 0x10
TAG_SET = 0x11

_CLASS_NAMES = ("UNIVERSAL", "APPLICATION", "CONTEXT", "PRIVATE")
_UNIVERSAL_NAMES = {
    TAG_INTEGER: "INTEGER",
    TAG_OCTET_STRING: "OCTET STRING",
    TAG_NULL: "NULL",
    TAG_OID: "OBJECT IDENTIFIER",
    TAG_SEQUENCE: "SEQUENCE",
    TAG_SET: "SET",
}


@dataclass(frozen=True)
class Node:
    """One TLV: ``value`` holds a primitive's bytes, ``children`` a constructed's elements."""

    tag_class: int
    constructed: bool
    tag: int
    offset: int
    value: bytes = b""
    children: tuple[Node, ...] = ()

    def describe(self) -> str:
        """A human name such as ``SEQUENCE`` or ``[0] constructed``, for error messages."""
        return describe(self.tag_class, self.tag, self.constructed)


def describe(tag_class: int, tag: int, constructed: bool) -> str:
    form = "constructed" if constructed else "primitive"
    if tag_class == UNIVERSAL and tag in _UNIVERSAL_NAMES:
        natural = tag in (TAG_SEQUENCE, TAG_SET)
        suffix = "" if natural == constructed else f" ({form})"
        return _UNIVERSAL_NAMES[tag] + suffix
    if tag_class == CONTEXT:
        return f"[{tag}] {form}"
    return f"{_CLASS_NAMES[tag_class]} {tag} {form}"


def parse(data: bytes) -> Node:
    """Read exactly one TLV tree that spans all of ``data``."""
    if len(data) > MAX_INPUT:
        raise CMSFormatError(f"envelope is {len(data)} bytes; at most {MAX_INPUT} are accepted")
    reader = _Reader(bytes(data))
    node = reader.read_node(0)
    if reader.pos != len(data):
        raise CMSFormatError(
            f"{len(data) - reader.pos} trailing bytes after the envelope at offset {reader.pos}"
        )
    return node


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _byte(self, what: str) -> int:
        if self.pos >= len(self.data):
            raise CMSFormatError(f"envelope ends at offset {self.pos} inside {what}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def read_node(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise CMSFormatError(f"nesting deeper than {MAX_DEPTH} levels at offset {self.pos}")
        offset = self.pos
        first = self._byte("a tag")
        tag_class, constructed, tag = first >> 6, bool(first & 0x20), first & 0x1F
        if tag == 0x1F:
            raise CMSFormatError(f"high tag number at offset {offset}; CMS here uses none")
        length = self._length(offset, constructed)
        if length is None:
            children = self._indefinite_children(depth)
            return Node(tag_class, constructed, tag, offset, children=children)
        end = self.pos + length
        if end > len(self.data):
            raise CMSFormatError(
                f"{describe(tag_class, tag, constructed)} at offset {offset} claims {length} "
                f"bytes but only {len(self.data) - self.pos} remain"
            )
        if not constructed:
            value = self.data[self.pos : end]
            self.pos = end
            return Node(tag_class, constructed, tag, offset, value=value)
        elements: list[Node] = []
        while self.pos < end:
            elements.append(self._child(depth, end))
        return Node(tag_class, constructed, tag, offset, children=tuple(elements))

    def _child(self, depth: int, end: int) -> Node:
        child = self.read_node(depth + 1)
        if self.pos > end:
            raise CMSFormatError(f"element at offset {child.offset} runs past its parent's end")
        if _is_eoc(child):
            raise CMSFormatError(f"end-of-contents at offset {child.offset} in a definite length")
        return child

    def _indefinite_children(self, depth: int) -> tuple[Node, ...]:
        children: list[Node] = []
        while True:
            child = self.read_node(depth + 1)
            if _is_eoc(child):
                return tuple(children)
            children.append(child)

    def _length(self, offset: int, constructed: bool) -> int | None:
        first = self._byte("a length")
        if first < 0x80:
            return first
        if first == 0x80:
            if not constructed:
                raise CMSFormatError(f"indefinite length on a primitive value at offset {offset}")
            return None
        count = first & 0x7F
        if count > 4:
            raise CMSFormatError(f"length of {count} bytes at offset {offset}; at most 4 allowed")
        raw = bytes(self._byte("a length") for _ in range(count))
        length = int.from_bytes(raw, "big")
        if raw[0] == 0 or length < 0x80:
            raise CMSFormatError(f"non-minimal length encoding at offset {offset}")
        return length


def _is_eoc(node: Node) -> bool:
    if node.tag_class == UNIVERSAL and node.tag == 0 and not node.constructed:
        if node.value:
            raise CMSFormatError(f"end-of-contents at offset {node.offset} carries bytes")
        return True
    return False


# --- writing -----------------------------------------------------------------------------------


def _length_bytes(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def definite(identifier: int, content: bytes) -> bytes:
    """A TLV with a definite (minimal) length."""
    return _head(identifier, len(content)) + content


@lru_cache(maxsize=256)
def _head(identifier: int, length: int) -> bytes:
    # The local KMS writes the same few (tag, length) pairs in every envelope it builds.
    return bytes([identifier]) + _length_bytes(length)


def indefinite(identifier: int, *parts: bytes) -> bytes:
    """A constructed TLV with an indefinite length, closed by end-of-contents."""
    return bytes([identifier | 0x20, 0x80]) + b"".join(parts) + b"\x00\x00"


def encode_oid(dotted: str) -> bytes:
    """DER body of an OBJECT IDENTIFIER (without tag and length)."""
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return bytes(body)
