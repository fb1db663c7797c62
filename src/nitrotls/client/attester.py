"""The policy half of an attested connection, shared by the sync and async httpx transports."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from nitrotls.attestation import Policy, Verifier
from nitrotls.client.cache import VerdictCache
from nitrotls.client.connect import NONCE_BYTES
from nitrotls.client.endpoint import Endpoint
from nitrotls.client.errors import ConnectFailedError
from nitrotls.client.exchange import AttestationExchange
from nitrotls.client.verdict import Verdict, judge, leaf_facts


@dataclass
class Attester:
    """Everything needed to judge a fresh TLS connection; caches verdicts between connections."""

    policy: Policy
    verifier: Verifier = field(default_factory=Verifier)
    allow_insecure_dev: bool = False
    cache: VerdictCache = field(default_factory=VerdictCache)

    def cached(self, host: str, port: int, leaf_der: bytes) -> Verdict | None:
        return self.cache.get(host, port, leaf_facts(leaf_der).spki_sha384)

    def begin(self, host: str, port: int) -> AttestationExchange:
        return AttestationExchange(Endpoint(host, port).host_header, os.urandom(NONCE_BYTES))

    def finish(
        self, host: str, port: int, exchange: AttestationExchange, leaf_der: bytes
    ) -> Verdict:
        verdict = judge(
            host=host,
            port=port,
            document=exchange.document(),
            leaf_der=leaf_der,
            nonce=exchange.nonce,
            verifier=self.verifier,
            policy=self.policy,
            allow_insecure_dev=self.allow_insecure_dev,
        )
        self.cache.put(verdict)
        return verdict


def peer_leaf(ssl_object: object) -> bytes:
    """The DER leaf certificate of a TLS object (``ssl.SSLObject``, ``ssl.SSLSocket`` or the
    ``_ssl._SSLSocket`` httpcore's sync backend exposes)."""
    getpeercert = getattr(ssl_object, "getpeercert", None)
    if ssl_object is None or not callable(getpeercert):
        raise ConnectFailedError("the connection is not TLS: attested connections need https://")
    leaf = getpeercert(True)  # positional: the internal _SSLSocket takes no keywords
    if not isinstance(leaf, bytes) or not leaf:
        raise ConnectFailedError("the server presented no certificate")
    return leaf
