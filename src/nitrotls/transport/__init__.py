"""nitrotls.transport (see docs/architecture.md)."""
