"""CA test fixtures: CSRs, and one Pebble + challtestsrv + HTTP-01 responder per module."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from nitrotls.ca import ChallengeServer, start_responder
from nitrotls.store import DirectoryStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import require_tool

from pebble_fixtures import PebbleStack, pebble_stack

BLOCKED_DOMAIN = "blocked.nitrotls.test"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def make_csr(
    names: Sequence[str], key: PrivateKey | None = None, *, common_name: str | None = None
) -> tuple[bytes, PrivateKey]:
    """A DER CSR for ``names`` (DNS names or IP literals) and its key."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or names[0])])
    )
    if general:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER), key


@pytest.fixture
def csr_factory() -> Callable[..., tuple[bytes, PrivateKey]]:
    return make_csr


@pytest.fixture
def account_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def acme_store(tmp_path_factory: pytest.TempPathFactory) -> DirectoryStore:
    """The store the generator would write HTTP-01 tokens to (and the responder reads)."""
    return DirectoryStore(tmp_path_factory.mktemp("acme-store"))


@pytest.fixture(scope="module")
def responder(acme_store: DirectoryStore) -> Iterator[ChallengeServer]:
    server, thread = start_responder(acme_store, "127.0.0.1", 0)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def pebble(
    tmp_path_factory: pytest.TempPathFactory, responder: ChallengeServer
) -> Iterator[PebbleStack]:
    """Pebble validating HTTP-01 against ``responder`` and resolving names via challtestsrv."""
    require_tool("pebble")
    require_tool("pebble-challtestsrv")
    port = int(responder.server_address[1])
    with pebble_stack(
        tmp_path_factory.mktemp("pebble"), http_port=port, domain_blocklist=[BLOCKED_DOMAIN]
    ) as stack:
        yield stack
