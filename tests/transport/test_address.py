"""Address parsing: the three schemes, canonical forms, and typed errors for everything else."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nitrotls.transport import (
    Address,
    AddressError,
    SocketPathTooLongError,
    parse_address,
    parse_host_port,
)


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("vsock://16:443", Address("vsock", cid=16, port=443), "vsock://16:443"),
        ("vsock://3:8000", Address("vsock", cid=3, port=8000), "vsock://3:8000"),
        ("unix:///run/x.sock", Address("unix", path="/run/x.sock"), "unix:///run/x.sock"),
        ("tcp://0.0.0.0:443", Address("tcp", host="0.0.0.0", port=443), "tcp://0.0.0.0:443"),
        ("tcp://[::1]:443", Address("tcp", host="::1", port=443), "tcp://[::1]:443"),
        (
            "tcp://[2001:DB8:0:0::1]:8443",
            Address("tcp", host="2001:db8::1", port=8443),
            "tcp://[2001:db8::1]:8443",
        ),
        ("tcp://KMS.example.COM.:443", Address("tcp", host="kms.example.com", port=443), None),
        ("tcp://127.0.0.1:0", Address("tcp", host="127.0.0.1", port=0), "tcp://127.0.0.1:0"),
    ],
)
def test_valid_addresses_parse_to_canonical_form(
    text: str, expected: Address, canonical: str | None
) -> None:
    parsed = parse_address(text)
    assert parsed == expected
    assert str(parsed) == (canonical or str(expected))
    assert parse_address(str(parsed)) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        "16:443",
        "http://example.com:80",
        "vsock://16",
        "vsock://16:",
        "vsock://x:443",
        "vsock://-1:443",
        "vsock://16:0",
        "vsock://4294967295:443",
        "vsock://16:4294967296",
        "vsock://+16:443",
        "unix://relative/path",
        "unix://",
        "tcp://example.com",
        "tcp://:443",
        "tcp://::1:443",
        "tcp://[::1]443",
        "tcp://[not-v6]:443",
        "tcp://host:65536",
        "tcp://host:-1",
        "tcp://host:44 3",
        "tcp://exa mple.com:443",
        "tcp://-bad.example:443",
        "tcp://127.1:443",
        "tcp://example.com:443/path",
        "tcp://user@example.com:443",
    ],
)
def test_malformed_addresses_raise_typed_errors(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)


def test_unix_path_longer_than_sun_path_is_refused() -> None:
    fits = "/" + "a" * 106
    assert parse_address("unix://" + fits).path == fits
    with pytest.raises(SocketPathTooLongError, match="107"):
        parse_address("unix:///" + "a" * 107)


def test_unix_path_with_nul_is_refused() -> None:
    with pytest.raises(AddressError, match="NUL"):
        Address.unix("/tmp/a\0b")


def test_constructors_validate_like_the_parser() -> None:
    assert Address.tcp("::1", 1) == parse_address("tcp://[::1]:1")
    assert Address.vsock(3, 8000) == parse_address("vsock://3:8000")
    with pytest.raises(AddressError):
        Address.tcp("127.0.0.1", 70000)
    with pytest.raises(AddressError):
        Address.vsock(True, 5)  # a bool is not a CID


def test_addresses_are_frozen_and_hashable() -> None:
    address = parse_address("vsock://16:443")
    with pytest.raises(AttributeError):
        address.port = 1  # type: ignore[misc]
    assert {address, parse_address("vsock://16:443")} == {address}


def test_host_port_accepts_bracketed_ipv6_and_names() -> None:
    assert parse_host_port("[::1]:443") == ("::1", 443)
    assert parse_host_port("Example.org:80") == ("example.org", 80)
    with pytest.raises(AddressError, match="brackets"):
        parse_host_port("::1:443")


@given(st.ip_addresses(), st.integers(0, 65535))
def test_any_ip_and_port_round_trip(ip: object, port: int) -> None:
    address = Address.tcp(str(ip), port)
    assert parse_address(str(address)) == address


@given(st.integers(0, 0xFFFFFFFE), st.integers(1, 0xFFFFFFFE))
def test_any_vsock_cid_and_port_round_trip(cid: int, port: int) -> None:
    address = Address.vsock(cid, port)
    assert parse_address(str(address)) == address


@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_typed_error(text: str) -> None:
    with contextlib.suppress(AddressError):
        parse_address(text)
