"""nitrotls.server (see docs/architecture.md)."""
