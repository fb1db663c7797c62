"""Errors of :mod:`nitrotls.nsm`: where attestation documents come from.

Every failure of the device, the simulation, image measurement or enclave selection is an
:class:`NSMError`, so the CLI prints one actionable line and callers can fail closed on the family.
"""

from __future__ import annotations

from nitrotls.errors import NitroTLSError


class NSMError(NitroTLSError):
    """Base class; ``code`` holds the NSM API error code when the device reported one."""

    code: str | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NSMArgumentError(NSMError):
    """An argument the NSM API would refuse (wrong type, negative length, index out of u16)."""


class NSMInputTooLargeError(NSMArgumentError):
    """user_data / nonce / public_key above 512 bytes, or a request above 4096 bytes."""


class PCRIndexError(NSMError):
    """A PCR index outside the module's bank (the device's ``InvalidIndex``)."""


class PCRLockedError(NSMError):
    """Extending or relying on a PCR that is read-only (the device's ``ReadOnlyIndex``)."""


class NSMDeviceError(NSMError):
    """The device failed: ioctl error, malformed or unexpected response, internal error."""


class ImageError(NSMError):
    """A simulated enclave image cannot be measured (missing, unreadable, unsupported entry)."""


class DevCAError(NSMError):
    """The simulated NSM's dev root under the data directory is unusable."""


class EnclaveSelectionError(NSMError):
    """No usable enclave identity: a bad ``--enclave`` spec, or no device and no choice made."""

    exit_code = 2
