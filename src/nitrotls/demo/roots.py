"""Which CA root the served chain leads to: the file a client gives ``--cacert``.

The bundle in the store may come from an earlier run (it is reused until due for renewal), and
Pebble makes a new root each time it starts, so the demo does not assume: it checks which known
root signed the last certificate of the bundle's chain, and publishes that one as ``ca.pem``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from nitrotls.nsm import write_atomic


def issuing_root(chain: tuple[bytes, ...], candidates: Iterable[Path]) -> x509.Certificate | None:
    """The candidate root (PEM files) that directly issued ``chain``'s last certificate."""
    if not chain:
        return None
    top = x509.load_der_x509_certificate(chain[-1])
    for path in candidates:
        try:
            root = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            continue
        if _is_self_signed(top) and top == root:
            return root
        try:
            top.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return root
    return None


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def publish_root(root: x509.Certificate, path: Path) -> Path:
    """Write ``root`` as PEM to ``path`` atomically (what ``curl --cacert`` reads)."""
    write_atomic(path, root.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return path
