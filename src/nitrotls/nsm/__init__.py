"""nitrotls.nsm (see docs/architecture.md)."""
