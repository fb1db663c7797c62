"""One address type for every link nitrotls uses: ``vsock://``, ``unix://`` and ``tcp://``.

Code written against :class:`Address` runs unchanged on a Nitro parent, inside an enclave and on a
developer's laptop: only the scheme in a string changes. Parsing is strict (no guessing), so a
typo is a typed error at start-up rather than a connection to the wrong place.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Literal

from nitrotls.transport.errors import AddressError, SocketPathTooLongError

Scheme = Literal["vsock", "unix", "tcp"]

UNIX_PATH_MAX = 107
"""Longest Unix socket path in bytes: ``sun_path`` holds 108 including the terminating NUL."""

VSOCK_MAX = 0xFFFFFFFE
"""Largest CID or port we accept; ``0xFFFFFFFF`` is the kernel's "any" wildcard."""

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DIGITS = re.compile(r"^[0-9]{1,10}$")
_FORMS = "vsock://CID:PORT, unix:///ABSOLUTE/PATH or tcp://HOST:PORT"


@dataclass(frozen=True)
class Address:
    """A parsed, validated endpoint. Build with :meth:`parse` or the scheme constructors."""

    scheme: Scheme
    host: str = ""
    port: int = 0
    cid: int = 0
    path: str = ""

    def __post_init__(self) -> None:
        if self.scheme == "tcp":
            object.__setattr__(self, "host", normalize_host(self.host))
            _check_range("TCP port", self.port, 0, 65535)
        elif self.scheme == "vsock":
            _check_range("vsock CID", self.cid, 0, VSOCK_MAX)
            _check_range("vsock port", self.port, 1, VSOCK_MAX)
        elif self.scheme == "unix":
            check_unix_path(self.path)
        else:
            raise AddressError(f"unknown address scheme {self.scheme!r}; expected {_FORMS}")

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``vsock://CID:PORT``, ``unix:///PATH`` or ``tcp://HOST:PORT`` (``[v6]:PORT``)."""
        return parse_address(text)

    @classmethod
    def tcp(cls, host: str, port: int) -> Address:
        return cls("tcp", host=host, port=port)

    @classmethod
    def vsock(cls, cid: int, port: int) -> Address:
        return cls("vsock", cid=cid, port=port)

    @classmethod
    def unix(cls, path: str | os.PathLike[str]) -> Address:
        return cls("unix", path=os.fspath(path))

    def with_port(self, port: int) -> Address:
        """The same address with another port (a TCP listener's ephemeral port, once bound)."""
        return Address(self.scheme, host=self.host, port=port, cid=self.cid, path=self.path)

    def __str__(self) -> str:
        if self.scheme == "vsock":
            return f"vsock://{self.cid}:{self.port}"
        if self.scheme == "unix":
            return f"unix://{self.path}"
        return f"tcp://{format_host_port(self.host, self.port)}"


def parse_address(text: str) -> Address:
    """Parse an address string; raise :class:`AddressError` saying which form was expected."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise AddressError(f"address {text!r} has no scheme; expected {_FORMS}")
    if scheme == "unix":
        if not rest.startswith("/"):
            raise AddressError(f"address {text!r}: expected unix:///ABSOLUTE/PATH (three slashes)")
        return Address.unix(rest)
    if scheme == "vsock":
        cid_text, colon, port_text = rest.partition(":")
        if not colon or not _DIGITS.match(cid_text) or not _DIGITS.match(port_text):
            raise AddressError(f"address {text!r}: expected vsock://CID:PORT with decimal numbers")
        return Address.vsock(int(cid_text), int(port_text))
    if scheme == "tcp":
        host, port = parse_host_port(rest, what=f"address {text!r}")
        return Address.tcp(host, port)
    raise AddressError(f"address {text!r} has unknown scheme {scheme!r}; expected {_FORMS}")


def parse_host_port(text: str, *, what: str = "destination") -> tuple[str, int]:
    """Split ``HOST:PORT`` or ``[IPv6]:PORT`` into a normalized host and a port number."""
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise AddressError(f"{what}: expected [IPV6]:PORT, found {text!r}")
        port_text = tail[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressError(f"{what}: {host!r} inside brackets is not an IPv6 address") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host:
            raise AddressError(f"{what}: expected HOST:PORT, found {text!r}")
        if ":" in host:
            raise AddressError(f"{what}: put IPv6 addresses in brackets, like [::1]:443")
    if not _DIGITS.match(port_text):
        raise AddressError(f"{what}: port {port_text!r} is not a decimal number")
    port = int(port_text)
    _check_range(f"{what}: port", port, 0, 65535)
    return normalize_host(host), port


def normalize_host(host: str) -> str:
    """Canonical form of an IP literal or hostname (lower case, no trailing dot)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.lower().removesuffix(".")
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or not all(_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise AddressError(
            f"host {host!r} is neither an IP address nor a valid DNS name "
            "(letters, digits and hyphens in dot-separated labels)"
        )
    return name


def format_host_port(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_unix_path(path: str) -> None:
    """Raise unless ``path`` is absolute, NUL-free and fits ``sun_path``."""
    if not path.startswith("/"):
        raise AddressError(f"Unix socket path {path!r} must be absolute")
    if "\0" in path:
        raise AddressError("Unix socket path contains a NUL byte")
    size = len(os.fsencode(path))
    if size > UNIX_PATH_MAX:
        raise SocketPathTooLongError(
            f"Unix socket path {path!r} is {size} bytes; the kernel allows at most "
            f"{UNIX_PATH_MAX}. Use a shorter path (or a shorter $NITROTLS_HOME)."
        )


def _check_range(what: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AddressError(f"{what} must be an integer from {low} to {high}, found {value!r}")
