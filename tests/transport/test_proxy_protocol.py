"""PROXY protocol v2: build and parse, IPv4 and IPv6, and typed errors for malformed headers."""

from __future__ import annotations

import asyncio
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nitrotls.transport import ProxyProtocolError
from nitrotls.transport.proxy_protocol import (
    SIGNATURE,
    ProxyHeader,
    decode,
    encode,
    header_for,
    header_length,
    read_header,
)
from transport.support import run


def test_ipv4_header_has_the_documented_layout() -> None:
    header = ProxyHeader("PROXY", ("192.0.2.1", 56324), ("198.51.100.7", 443))
    wire = encode(header)
    assert wire[:12] == b"\r\n\r\n\x00\r\nQUIT\n"
    assert wire[12] == 0x21  # version 2, PROXY
    assert wire[13] == 0x11  # TCP over IPv4
    assert struct.unpack("!H", wire[14:16]) == (12,)
    assert wire[16:20] == bytes([192, 0, 2, 1])
    assert wire[20:24] == bytes([198, 51, 100, 7])
    assert struct.unpack("!HH", wire[24:28]) == (56324, 443)
    assert decode(wire) == header


def test_ipv6_header_round_trips() -> None:
    header = ProxyHeader("PROXY", ("2001:db8::1", 1234), ("2001:db8::2", 443))
    wire = encode(header)
    assert wire[13] == 0x21  # TCP over IPv6
    assert header_length(wire) == len(wire) == 16 + 36
    assert decode(wire) == header


def test_mixed_families_are_sent_as_ipv6_and_mapped_v4_as_v4() -> None:
    mixed = decode(encode(ProxyHeader("PROXY", ("192.0.2.1", 1), ("::1", 2))))
    # The text is ipaddress's: "::ffff:c000:201" before Python 3.13, "::ffff:192.0.2.1" after.
    assert mixed.source == (str(ipaddress.IPv6Address("::ffff:192.0.2.1")), 1)
    mapped = encode(ProxyHeader("PROXY", ("::ffff:192.0.2.1", 1), ("::ffff:192.0.2.2", 2)))
    assert mapped[13] == 0x11
    assert decode(mapped).source == ("192.0.2.1", 1)


def test_local_header_and_tlvs_round_trip() -> None:
    header = ProxyHeader("LOCAL", tlvs=((0x02, b"example.com"), (0xE0, b"")))
    wire = encode(header)
    assert wire[12] == 0x20 and wire[13] == 0x00
    assert decode(wire) == header


def test_proxy_header_needs_addresses() -> None:
    with pytest.raises(ProxyProtocolError, match="source and a destination"):
        encode(ProxyHeader("PROXY"))
    with pytest.raises(ProxyProtocolError, match="not an IP address"):
        encode(ProxyHeader("PROXY", ("example.com", 1), ("::1", 2)))
    with pytest.raises(ProxyProtocolError, match="out of range"):
        encode(ProxyHeader("PROXY", ("::1", 70000), ("::1", 2)))


def test_header_for_asyncio_peer_names() -> None:
    v4 = header_for(("127.0.0.1", 5000), ("127.0.0.1", 443))
    assert v4 == ProxyHeader("PROXY", ("127.0.0.1", 5000), ("127.0.0.1", 443))
    v6 = header_for(("::1", 5000, 0, 0), ("::1", 443, 0, 0))
    assert v6.source == ("::1", 5000)
    assert header_for("", "/run/x.sock") == ProxyHeader("LOCAL")
    assert header_for((16, 443), (3, 9)) == ProxyHeader("LOCAL")


def _valid() -> bytes:
    return encode(ProxyHeader("PROXY", ("10.0.0.1", 1), ("10.0.0.2", 2)))


def _with_length(body: bytes, family: int = 0x11, command: int = 0x21) -> bytes:
    return SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"", "truncated"),
        (_valid()[:15], "truncated"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "signature"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "signature"),
        (SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "version 1"),
        (SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "command"),
        (_with_length(bytes(8)), "need 12 bytes"),
        (_with_length(bytes(30), family=0x21), "need 36 bytes"),
        (_with_length(bytes(12), family=0x12), "UDP over IPv4"),
        (_with_length(bytes(216), family=0x31), "Unix stream"),
        (_with_length(bytes(12), family=0x99), "unknown family"),
        (_with_length(bytes(12) + b"\x01\x00"), "TLV truncated"),
        (_with_length(bytes(12) + b"\x01\x00\x05ab"), "announces 5 bytes"),
        (_valid() + b"extra", "announces 28 bytes"),
        (_valid()[:-1], "announces 28 bytes"),
    ],
)
def test_malformed_headers_raise_typed_errors(wire: bytes, message: str) -> None:
    with pytest.raises(ProxyProtocolError, match=message):
        decode(wire)


def test_local_command_ignores_an_unsupported_family() -> None:
    assert decode(_with_length(bytes(216), family=0x31, command=0x20)) == ProxyHeader("LOCAL")


def _reader(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def test_read_header_leaves_the_payload_in_the_stream() -> None:
    async def scenario() -> tuple[ProxyHeader, bytes]:
        reader = _reader(_valid() + b"\x16\x03\x01 client hello")
        header = await read_header(reader)
        return header, await reader.read()

    header, rest = run(scenario())
    assert header.source == ("10.0.0.1", 1)
    assert rest == b"\x16\x03\x01 client hello"


@pytest.mark.parametrize("cut", [0, 5, 16, 20])
def test_read_header_reports_a_connection_closed_mid_header(cut: int) -> None:
    async def scenario() -> None:
        await read_header(_reader(_valid()[:cut]))

    with pytest.raises(ProxyProtocolError, match="closed inside"):
        run(scenario())


def test_read_header_times_out_instead_of_hanging() -> None:
    async def scenario() -> None:
        await read_header(_reader(_valid()[:10], eof=False), timeout=0.05)

    with pytest.raises(ProxyProtocolError, match="no complete PROXY v2 header"):
        run(scenario())


endpoints = st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 65535))


def _not_mapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None


endpoints6 = st.tuples(st.ip_addresses(v=6).filter(_not_mapped).map(str), st.integers(0, 65535))
tlvs = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4).map(tuple)


@given(st.one_of(st.tuples(endpoints, endpoints), st.tuples(endpoints6, endpoints6)), tlvs)
def test_any_header_round_trips(
    pair: tuple[tuple[str, int], tuple[str, int]], extra: tuple[tuple[int, bytes], ...]
) -> None:
    header = ProxyHeader("PROXY", pair[0], pair[1], extra)
    assert decode(encode(header)) == header


@given(st.binary(max_size=80))
def test_arbitrary_bytes_decode_or_raise_typed_error(data: bytes) -> None:
    try:
        decoded = decode(SIGNATURE + data)
    except ProxyProtocolError:
        return
    for endpoint in (decoded.source, decoded.destination):
        if endpoint is not None:
            ipaddress.ip_address(endpoint[0])
