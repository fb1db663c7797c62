"""nitrotls.demo: the whole system on one machine, with one command (``nitrotls demo``).

A role that starts processes: the local KMS, a CA (Pebble when installed, else the local dev
CA), the host's outbound and inbound proxies and ACME responder, a generator enclave and a main
enclave as simulated-enclave processes that reach KMS and the CA only through ``enclave
forward`` → ``host outbound``, and a tiny upstream web app; then an attested client proves the
public address. See docs/demo.md.

    from nitrotls.demo import DemoOptions, run_demo
    status = run_demo(DemoOptions(port=8443, exit_after_verify=True), console)
"""

from nitrotls.demo.errors import DemoError, DemoInterruptedError, DemoStageError
from nitrotls.demo.layout import BUNDLE_NAME, DOMAIN
from nitrotls.demo.orchestrator import DemoOptions, DemoResult
from nitrotls.demo.procs import MARKER_ENV
from nitrotls.demo.run import run_demo

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
