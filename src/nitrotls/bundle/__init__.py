"""nitrotls.bundle (see docs/architecture.md)."""
