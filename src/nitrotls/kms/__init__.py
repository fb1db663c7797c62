"""nitrotls.kms (see docs/architecture.md)."""
