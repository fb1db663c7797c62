"""Why an attested connection was refused: one class per reason, under :class:`ClientError`."""

from __future__ import annotations

from nitrotls.errors import NitroTLSError


class ClientError(NitroTLSError):
    """The client did not hand over the connection: the enclave was not proven."""


class ConnectFailedError(ClientError):
    """TCP or TLS could not be established (including certificate validation failures)."""


class AttestationExchangeError(ClientError):
    """The server did not answer the attestation request with a well-formed document."""


class BindingMismatchError(ClientError):
    """The attested certificate key is not the one this connection was shown (a relay or MITM)."""


class InsecureServerError(ClientError):
    """The server runs the insecure bundled-certificate development mode."""
