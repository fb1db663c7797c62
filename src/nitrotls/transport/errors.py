"""Typed errors of the transport package: each says what was expected, found, and what to do."""

from __future__ import annotations

from nitrotls.errors import NitroTLSError


class TransportError(NitroTLSError):
    """Base of every transport error."""


class AddressError(TransportError):
    """An address string is malformed or out of range."""

    exit_code = 2


class SocketPathTooLongError(AddressError):
    """A Unix socket path does not fit the kernel's 108-byte ``sun_path``."""


class VsockModeError(TransportError):
    """It is not clear (or not possible) how to reach a ``vsock://`` address on this machine."""

    exit_code = 2  # fixed by configuration ($NITROTLS_VSOCK, the address), not by retrying


class ListenError(TransportError):
    """A listener could not be opened (address in use, not a socket, no permission, ...)."""


class TransportConnectError(TransportError):
    """A connection to an address could not be made."""


class ProxyProtocolError(TransportError):
    """A PROXY protocol v2 header is malformed, truncated or unsupported."""


class AllowListError(TransportError):
    """An outbound allow-list file is missing, malformed or empty."""

    exit_code = 2


class PreambleError(TransportError):
    """The outbound proxy's ``CONNECT host:port`` exchange failed or was refused."""
