"""nitrotls.demo: the whole system on one machine, with one command (``nitrotls demo``).

A role that starts processes: the local KMS, a CA (Pebble when installed, else the local dev
CA), the host's outbound and inbound proxies and ACME responder, a generator enclave and a main
enclave as simulated-enclave processes that reach KMS and the CA only through ``enclave
forward`` → ``host outbound``, and a tiny upstream web app; then an attested client proves the
public address. See docs/demo.md.

    from nitrotls.demo import DemoOptions, run_demo
    status = run_demo(DemoOptions(port=8443, exit_after_verify=True), console)

Exports load lazily, so ``python -m nitrotls.demo.webapp`` (a child of the demo) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nitrotls.demo.errors import DemoError, DemoInterruptedError, DemoStageError
    from nitrotls.demo.layout import BUNDLE_NAME, DOMAIN
    from nitrotls.demo.orchestrator import DemoOptions, DemoResult
    from nitrotls.demo.procs import MARKER_ENV
    from nitrotls.demo.run import run_demo

_EXPORTS = {
    "BUNDLE_NAME": "nitrotls.demo.layout",
    "DOMAIN": "nitrotls.demo.layout",
    "MARKER_ENV": "nitrotls.demo.procs",
    "DemoError": "nitrotls.demo.errors",
    "DemoInterruptedError": "nitrotls.demo.errors",
    "DemoOptions": "nitrotls.demo.orchestrator",
    "DemoResult": "nitrotls.demo.orchestrator",
    "DemoStageError": "nitrotls.demo.errors",
    "run_demo": "nitrotls.demo.run",
}

__all__ = [
    "BUNDLE_NAME",
    "DOMAIN",
    "MARKER_ENV",
    "DemoError",
    "DemoInterruptedError",
    "DemoOptions",
    "DemoResult",
    "DemoStageError",
    "run_demo",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nitrotls.demo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
