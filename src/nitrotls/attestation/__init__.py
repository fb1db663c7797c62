"""nitrotls.attestation (see docs/architecture.md)."""
