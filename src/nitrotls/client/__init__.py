"""Attested TLS client: know you reached a measured enclave before sending a byte.

``connect(url, policy)`` returns a TLS socket only after the server's fresh attestation document
(with our nonce) binds the certificate this very connection presented. ``Client`` /
``AsyncClient`` do the same for every new httpx connection, caching verdicts per
(host, port, SPKI) no longer than the document's chain and the policy's maximum age.
"""

from nitrotls.client.attester import Attester
from nitrotls.client.cache import VerdictCache
from nitrotls.client.connect import AttestedConnection, connect, tls_context
from nitrotls.client.errors import (
    AttestationExchangeError,
    BindingMismatchError,
    ClientError,
    ConnectFailedError,
    InsecureServerError,
)
from nitrotls.client.transport import AsyncAttestedTransport, AsyncClient, AttestedTransport, Client
from nitrotls.client.verdict import Verdict, judge

__all__ = [
    "AsyncAttestedTransport",
    "AsyncClient",
    "AttestationExchangeError",
    "AttestedConnection",
    "AttestedTransport",
    "Attester",
    "BindingMismatchError",
    "Client",
    "ClientError",
    "ConnectFailedError",
    "InsecureServerError",
    "Verdict",
    "VerdictCache",
    "connect",
    "judge",
    "tls_context",
]
