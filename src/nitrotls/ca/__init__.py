"""nitrotls.ca (see docs/architecture.md)."""
