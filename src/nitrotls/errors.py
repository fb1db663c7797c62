"""The root of every error nitrotls raises on purpose.

Each building block derives its own family from :class:`NitroTLSError`, so the CLI can turn any
of them into one actionable line (and an exit code) instead of a traceback.
"""

from __future__ import annotations


class NitroTLSError(Exception):
    """Base class: the message says what was expected, what was found, and what to do."""

    exit_code: int = 1
