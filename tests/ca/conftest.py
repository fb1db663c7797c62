"""CA test fixtures: CSRs, and one Pebble + challtestsrv + HTTP-01 responder per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ca.ca_support import BLOCKED_DOMAIN
from nitrotls.ca import ChallengeServer, start_responder
from nitrotls.store import DirectoryStore

from pebble_fixtures import PebbleStack, pebble_stack
from system_tools import require_tool


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
