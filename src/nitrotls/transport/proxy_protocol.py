"""PROXY protocol version 2 (binary): the host tells the enclave who the client is.

TLS ends inside the enclave, so the host's inbound proxy cannot add an HTTP header; instead it
sends this fixed binary header before the first client byte. :func:`encode` builds one (``PROXY``
over TCP/IPv4 or TCP/IPv6, or ``LOCAL``), :func:`decode` and :func:`read_header` parse one on
the enclave side. Parsing is strict: anything malformed, truncated or of an unsupported family
(UDP, Unix) is a :class:`ProxyProtocolError`, and the connection should be dropped.
TLVs are kept raw and not interpreted (in particular a CRC32C TLV is not checked).
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from dataclasses import dataclass
from typing import Literal

from nitrotls.transport.errors import ProxyProtocolError

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PREFIX_LENGTH = 16
MAX_LENGTH = PREFIX_LENGTH + 0xFFFF

_VERSION = 0x20
Command = Literal["PROXY", "LOCAL"]
_COMMANDS: dict[int, Command] = {0x0: "LOCAL", 0x1: "PROXY"}
_UNSPEC, _TCP4, _TCP6 = 0x00, 0x11, 0x21
_ADDRESS_LENGTH = {_UNSPEC: 0, _TCP4: 12, _TCP6: 36}
_FAMILY_NAMES = {
    0x12: "UDP over IPv4",
    0x22: "UDP over IPv6",
    0x31: "Unix stream",
    0x32: "Unix dgram",
}

Endpoint = tuple[str, int]


@dataclass(frozen=True)
class ProxyHeader:
    """A PROXY v2 header. ``source``/``destination`` are ``(ip, port)``; ``None`` when unknown."""

    command: Command = "PROXY"
    source: Endpoint | None = None
    destination: Endpoint | None = None
    tlvs: tuple[tuple[int, bytes], ...] = ()


def encode(header: ProxyHeader) -> bytes:
    """The wire form of ``header`` (IPv4 when both ends are IPv4, else IPv6)."""
    command = 0x1 if header.command == "PROXY" else 0x0
    body = b""
    family = _UNSPEC
    if header.command == "PROXY":
        if header.source is None or header.destination is None:
            raise ProxyProtocolError("a PROXY header needs both a source and a destination")
        family, body = _encode_addresses(header.source, header.destination)
    for kind, value in header.tlvs:
        if not 0 <= kind <= 0xFF or len(value) > 0xFFFF:
            raise ProxyProtocolError(f"TLV type {kind} / length {len(value)} out of range")
        body += struct.pack("!BH", kind, len(value)) + value
    if len(body) > 0xFFFF:
        raise ProxyProtocolError(f"PROXY header body of {len(body)} bytes exceeds 65535")
    return SIGNATURE + struct.pack("!BBH", _VERSION | command, family, len(body)) + body


def _encode_addresses(source: Endpoint, destination: Endpoint) -> tuple[int, bytes]:
    src, dst = _ip(source[0]), _ip(destination[0])
    for _, port in (source, destination):
        if not 0 <= port <= 0xFFFF:
            raise ProxyProtocolError(f"port {port} is out of range 0-65535")
    if isinstance(src, ipaddress.IPv4Address) and isinstance(dst, ipaddress.IPv4Address):
        return _TCP4, src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    src6, dst6 = _as_v6(src), _as_v6(dst)
    return _TCP6, src6.packed + dst6.packed + struct.pack("!HH", source[1], destination[1])


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        raise ProxyProtocolError(f"{text!r} is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _as_v6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed)


def header_length(prefix: bytes) -> int:
    """Total header length announced by its first 16 bytes (validating signature and version)."""
    if len(prefix) < PREFIX_LENGTH:
        raise ProxyProtocolError(
            f"PROXY v2 header truncated: need {PREFIX_LENGTH} bytes, found {len(prefix)}"
        )
    if prefix[:12] != SIGNATURE:
        raise ProxyProtocolError(
            f"expected a PROXY v2 signature, found {bytes(prefix[:12])!r}; is the host's "
            "inbound proxy running with --proxy-protocol?"
        )
    if prefix[12] & 0xF0 != _VERSION:
        raise ProxyProtocolError(f"PROXY protocol version {prefix[12] >> 4} is not 2")
    length: int = struct.unpack_from("!H", prefix, 14)[0]
    return PREFIX_LENGTH + length


def decode(data: bytes) -> ProxyHeader:
    """Parse exactly one complete header (no trailing bytes)."""
    total = header_length(data)
    if len(data) != total:
        raise ProxyProtocolError(f"PROXY v2 header announces {total} bytes, found {len(data)}")
    command = _COMMANDS.get(data[12] & 0x0F)
    if command is None:
        raise ProxyProtocolError(f"unknown PROXY v2 command {data[12] & 0x0F:#x}")
    family = data[13]
    body = memoryview(data)[PREFIX_LENGTH:]
    if family not in _ADDRESS_LENGTH:
        name = _FAMILY_NAMES.get(family, f"unknown family {family:#04x}")
        if command == "LOCAL":
            return ProxyHeader("LOCAL")
        raise ProxyProtocolError(f"PROXY v2 address family {name} is not supported (TCP only)")
    need = _ADDRESS_LENGTH[family]
    if len(body) < need:
        raise ProxyProtocolError(
            f"PROXY v2 addresses need {need} bytes for family {family:#04x}, found {len(body)}"
        )
    tlvs = _decode_tlvs(body[need:])
    if command == "LOCAL" or family == _UNSPEC:
        return ProxyHeader(command, None, None, tlvs)
    source, destination = _decode_addresses(family, body[:need])
    return ProxyHeader("PROXY", source, destination, tlvs)


def _decode_addresses(family: int, raw: memoryview) -> tuple[Endpoint, Endpoint]:
    size = 4 if family == _TCP4 else 16
    maker = ipaddress.IPv4Address if family == _TCP4 else ipaddress.IPv6Address
    src = maker(bytes(raw[:size]))
    dst = maker(bytes(raw[size : 2 * size]))
    src_port, dst_port = struct.unpack_from("!HH", raw, 2 * size)
    return (str(src), src_port), (str(dst), dst_port)


def _decode_tlvs(raw: memoryview) -> tuple[tuple[int, bytes], ...]:
    tlvs: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(raw):
        if len(raw) - offset < 3:
            raise ProxyProtocolError(f"PROXY v2 TLV truncated at offset {offset}")
        kind, length = struct.unpack_from("!BH", raw, offset)
        end = offset + 3 + length
        if end > len(raw):
            raise ProxyProtocolError(
                f"PROXY v2 TLV type {kind:#04x} announces {length} bytes, "
                f"only {len(raw) - offset - 3} remain"
            )
        tlvs.append((kind, bytes(raw[offset + 3 : end])))
        offset = end
    return tuple(tlvs)


async def read_header(reader: asyncio.StreamReader, *, timeout: float | None = 10.0) -> ProxyHeader:
    """Read and parse the header at the start of a connection (the enclave side)."""
    try:
        async with asyncio.timeout(timeout):
            prefix = await reader.readexactly(PREFIX_LENGTH)
            total = header_length(prefix)
            rest = await reader.readexactly(total - PREFIX_LENGTH)
    except asyncio.IncompleteReadError as error:
        raise ProxyProtocolError(
            f"connection closed inside the PROXY v2 header after {len(error.partial)} bytes"
        ) from None
    except TimeoutError:
        raise ProxyProtocolError(f"no complete PROXY v2 header within {timeout}s") from None
    return decode(prefix + rest)


def header_for(peer: object, local: object) -> ProxyHeader:
    """The header describing a TCP connection from asyncio's ``peername``/``sockname``.

    Non-IP connections (Unix, vsock) become ``LOCAL``: the receiver then uses its own view.
    """
    if (
        isinstance(peer, tuple)
        and isinstance(local, tuple)
        and len(peer) >= 2
        and len(local) >= 2
        and isinstance(peer[0], str)
        and isinstance(local[0], str)
    ):
        try:
            _ip(peer[0])
            _ip(local[0])
        except ProxyProtocolError:
            return ProxyHeader("LOCAL")
        return ProxyHeader("PROXY", (peer[0], int(peer[1])), (local[0], int(local[1])))
    return ProxyHeader("LOCAL")
