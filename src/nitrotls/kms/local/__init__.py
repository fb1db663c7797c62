"""A local KMS that speaks AWS KMS's JSON 1.1 protocol and enforces attestation in key policies.

The same boto3 code talks to it and to AWS: point ``endpoint_url`` at it and sign with a
configured credential (by default the development one, :data:`DEV_CREDENTIAL`). See
docs/kms-local.md for what is enforced and how it differs from AWS.

Public API::

    with running_server(trust_dev_root=True) as endpoint_url: ...   # tests and demos
    with LocalKMSServer(config) as server: server.endpoint_url, server.audit_path
    serve(load_config(path))                                          # blocks until SIGTERM
    verify_log(path) -> AuditReport                                   # the audit chain
"""

from __future__ import annotations

from nitrotls.kms.local.audit import AuditReport, verify_log
from nitrotls.kms.local.config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEV_ACCESS_KEY,
    DEV_CREDENTIAL,
    DEV_PRINCIPAL,
    DEV_SECRET,
    ServerConfig,
    load_config,
    parse_listen,
)
from nitrotls.kms.local.errors import (
    AuditError,
    ConfigError,
    LocalKMSError,
    ServiceError,
    StorageError,
)
from nitrotls.kms.local.server import LocalKMSServer, running_server, serve
from nitrotls.kms.local.sigv4 import Credential

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEV_ACCESS_KEY",
    "DEV_CREDENTIAL",
    "DEV_PRINCIPAL",
    "DEV_SECRET",
    "AuditError",
    "AuditReport",
    "ConfigError",
    "Credential",
    "LocalKMSError",
    "LocalKMSServer",
    "ServerConfig",
    "ServiceError",
    "StorageError",
    "load_config",
    "parse_listen",
    "running_server",
    "serve",
    "verify_log",
]
