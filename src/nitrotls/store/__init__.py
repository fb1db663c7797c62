"""nitrotls.store (see docs/architecture.md)."""
