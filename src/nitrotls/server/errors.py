"""Typed errors of the main enclave's server, one family under :class:`ServerError`.

Exit codes let an orchestrator tell "fix the configuration" (2) from "a dependency is down,
try again later" (75, ``EX_TEMPFAIL``) from "the bundle itself is not acceptable" (65,
``EX_DATAERR``) from "KMS will not release the key to this enclave" (77, ``EX_NOPERM``).
"""

from __future__ import annotations

from nitrotls.errors import NitroTLSError


class ServerError(NitroTLSError):
    """Base of every error raised by :mod:`nitrotls.server`."""


class ServerConfigError(ServerError):
    """The serving configuration is incomplete or contradictory."""

    exit_code = 2


class TLSContextError(ServerError):
    """The certificate chain or key could not be loaded into an ``ssl.SSLContext``."""

    exit_code = 65


class BundleRejectedError(ServerError):
    """No bundle in the store passed verification, so there is nothing safe to serve."""

    exit_code = 65


class StartupUnavailableError(ServerError):
    """KMS or the store stayed unreachable through every retry at start-up."""

    exit_code = 75


class KeyReleaseRefusedError(ServerError):
    """KMS answered without the bundle's data key (access denied, a request it rejects, or an
    unusable answer): unlike an outage, waiting will not change that."""

    exit_code = 77


class ListenError(ServerError):
    """The listening socket could not be opened."""

    exit_code = 71
