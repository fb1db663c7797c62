"""Transport tests rely on the root conftest's ``unix_vsock`` guard (no real AF_VSOCK, ever)."""
