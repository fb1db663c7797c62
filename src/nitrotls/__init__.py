"""nitrotls: CA-signed TLS certificates whose keys live only inside attested Nitro Enclaves."""

__version__ = "0.1.0"
