"""nitrotls.generator (see docs/architecture.md)."""
