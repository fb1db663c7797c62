"""Typed errors of the generator role."""

from __future__ import annotations

from nitrotls.errors import NitroTLSError


class GeneratorError(NitroTLSError):
    """Base of every generator error."""


class GeneratorConfigError(GeneratorError):
    """The generator cannot start with this configuration (a name, domain or key is missing)."""

    exit_code = 2


class LeaseUnavailableError(GeneratorError):
    """Another generator holds the store lease for this name past our wait."""


class AccountRecordError(GeneratorError):
    """The sealed ACME account in the store is malformed or belongs elsewhere."""


class IssuanceFailedError(GeneratorError):
    """Every attempt of an issuance failed; the previous bundle stays in force."""
