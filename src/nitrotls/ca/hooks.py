"""How ACME challenges get published: HTTP-01 into a store, DNS-01 through a hook.

HTTP-01 key authorizations are not secret (RFC 8555 §8.3): the generator writes them to the
store and the host's ``nitrotls host acme-responder`` serves them. DNS-01 needs a TXT record at
``_acme-challenge.<domain>``; nitrotls does not speak any DNS provider's API, it calls a hook —
a Python callable, or a command run as ``COMMAND add|remove RECORD_NAME VALUE``.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from nitrotls.ca.errors import AcmeChallengeError

DnsHook = Callable[[str, str, str], None]
"""``hook(action, record_name, value)``: action ``"add"`` or ``"remove"``; record_name is
``_acme-challenge.<domain>`` without a trailing dot; value is the TXT record's text."""

_OUTPUT_TAIL = 300


@runtime_checkable
class Http01Publisher(Protocol):
    """Where HTTP-01 key authorizations go (every ``BundleStore`` is one)."""

    def put_challenge(self, token: str, key_authorization: str) -> None: ...

    def delete_challenge(self, token: str) -> None: ...


def command_dns_hook(command: str | Sequence[str], timeout: float = 30.0) -> DnsHook:
    """A :data:`DnsHook` running ``command add|remove RECORD VALUE`` (no shell; bounded time)."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv:
        raise AcmeChallengeError("DNS hook command is empty")

    def hook(action: str, record_name: str, value: str) -> None:
        try:
            done = subprocess.run(
                [*argv, action, record_name, value],
                capture_output=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise AcmeChallengeError(f"DNS hook {argv[0]!r} not found") from None
        except subprocess.TimeoutExpired:
            raise AcmeChallengeError(
                f"DNS hook {argv[0]!r} {action} {record_name} did not finish in {timeout:.0f} s"
            ) from None
        except OSError as error:
            raise AcmeChallengeError(f"DNS hook {argv[0]!r} could not run: {error}") from error
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-_OUTPUT_TAIL:]
            raise AcmeChallengeError(
                f"DNS hook {argv[0]!r} {action} {record_name} exited {done.returncode}: "
                f"{tail or 'no output'}"
            )

    return hook
