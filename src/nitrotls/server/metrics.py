"""Counters and gauges of a running server, rendered in the Prometheus text format.

Plain integer attributes, incremented in place on the hot path (no locks: one event loop owns
them); rendering happens only when ``/metrics`` is scraped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

_HELP: dict[str, tuple[str, str]] = {
    "handshakes": ("counter", "TLS handshakes completed"),
    "handshake_failures": ("counter", "TLS handshakes that failed or timed out"),
    "connections_active": ("gauge", "Client connections currently open"),
    "connections_refused": ("counter", "Connections closed at once (one-shot spent, bad PROXY)"),
    "requests": ("counter", "HTTP requests received from clients"),
    "upstream_errors": ("counter", "Requests answered 502/504 because upstream failed"),
    "timeouts": ("counter", "Client connections closed by a timeout"),
    "attestation_requests": ("counter", "Attestation documents served"),
    "attestation_rejected": ("counter", "Attestation requests refused (bad nonce, rate limit)"),
    "reloads": ("counter", "Bundles loaded after start (hot reloads)"),
    "reload_rejected": ("counter", "Newer bundles that failed verification and were ignored"),
    "kms_errors": ("counter", "KMS calls that failed"),
    "store_errors": ("counter", "Store reads that failed"),
    "bundle_seq": ("gauge", "Sequence number of the bundle being served"),
    "certificate_expiry_seconds": ("gauge", "Seconds until the served certificate expires"),
    "last_reload_check_timestamp_seconds": ("gauge", "Unix time of the last store poll"),
}


@dataclass
class Metrics:
    """Everything ``/metrics`` reports; attributes are named after the metric (prefix added)."""

    handshakes: int = 0
    handshake_failures: int = 0
    connections_active: int = 0
    connections_refused: int = 0
    requests: int = 0
    upstream_errors: int = 0
    timeouts: int = 0
    attestation_requests: int = 0
    attestation_rejected: int = 0
    reloads: int = 0
    reload_rejected: int = 0
    kms_errors: int = 0
    store_errors: int = 0
    bundle_seq: int = -1
    not_after: float = 0.0
    last_reload_check: float = 0.0
    store_ok: bool = True
    kms_ok: bool = True
    serving: bool = False
    labels: dict[str, str] = field(default_factory=dict)

    def render(self, now: float | None = None) -> str:
        """The Prometheus text exposition of every metric."""
        now = time.time() if now is None else now
        values: dict[str, float] = {
            name: float(getattr(self, name)) for name in _HELP if hasattr(self, name)
        }
        values["certificate_expiry_seconds"] = (self.not_after - now) if self.not_after else 0.0
        values["last_reload_check_timestamp_seconds"] = self.last_reload_check
        lines: list[str] = []
        for name, (kind, text) in _HELP.items():
            full = f"nitrotls_{name}" + ("_total" if kind == "counter" else "")
            lines.append(f"# HELP {full} {text}")
            lines.append(f"# TYPE {full} {kind}")
            lines.append(f"{full} {_number(values[name])}")
        for name, ok in (("store_up", self.store_ok), ("kms_up", self.kms_ok)):
            lines.append(f"# HELP nitrotls_{name} 1 when the last call succeeded")
            lines.append(f"# TYPE nitrotls_{name} gauge")
            lines.append(f"nitrotls_{name} {int(ok)}")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.3f}"
