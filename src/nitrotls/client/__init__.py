"""nitrotls.client (see docs/architecture.md)."""
