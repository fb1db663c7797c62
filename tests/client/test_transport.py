"""The httpx transport: attest once per new connection, before any application byte."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from nitrotls.attestation import Policy, Verifier
from nitrotls.client import AsyncClient, BindingMismatchError, Client

from attested_server import relay
from certs import PKI, make_leaf

ATTEST = "/.well-known/nitrotls/attestation"


def test_attestation_precedes_the_first_request(
    server, pki: PKI, policy: Policy, verifier: Verifier
) -> None:
    with Client(policy, verifier=verifier, ca=pki.ca_file) as client:
        assert client.get(server.url + "/").text == "hello from the enclave"
        assert client.get(server.url + "/again").status_code == 200
    (only,) = server.log.connections
    assert only[0].startswith(ATTEST + "?nonce=")
    assert only[1:] == ["/", "/again"]


def test_no_application_byte_reaches_a_man_in_the_middle_path(
    server, pki: PKI, policy: Policy, verifier: Verifier, tmp_path: Path
) -> None:
    mitm_cert, mitm_key = make_leaf(pki.ca).write(tmp_path, "mitm")
    with (
        relay(str(mitm_cert), str(mitm_key), server.port, pki.ca_file) as port,
        Client(policy, verifier=verifier, ca=pki.ca_file) as client,
        pytest.raises(BindingMismatchError),
    ):
        client.get(f"https://localhost:{port}/secret")
    seen = [target for conn in server.log.connections for target in conn]
    assert seen and all(target.startswith(ATTEST) for target in seen)


def test_verdict_is_cached_per_spki(server, pki: PKI, policy: Policy, verifier: Verifier) -> None:
    limits = httpx.Limits(max_keepalive_connections=0)
    with Client(policy, verifier=verifier, ca=pki.ca_file, limits=limits) as client:
        client.get(server.url + "/one")
        client.get(server.url + "/two")
    assert len(server.log.connections) == 2
    assert server.log.connections[0][0].startswith(ATTEST)
    assert server.log.connections[1] == ["/two"]
    assert len(client.attester.cache) == 1


def test_async_client(server, pki: PKI, policy: Policy, verifier: Verifier) -> None:
    async def run() -> str:
        async with AsyncClient(policy, verifier=verifier, ca=pki.ca_file) as client:
            return (await client.get(server.url + "/")).text

    assert asyncio.run(run()) == "hello from the enclave"
    assert server.log.connections[0][0].startswith(ATTEST)
