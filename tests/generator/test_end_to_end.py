"""End to end against Pebble: generator + local KMS + store + HTTP-01 responder or DNS-01 hook.

A simulated main enclave, allowed by the key policy, verifies and opens what the generator
published; the key matches the leaf and the chain verifies against Pebble's root.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from generator.conftest import Challenges, Deployment, acme_section
from generator.helpers import assert_key_matches_leaf, open_as_main
from nitrotls.generator import Runner, make_issuer
from nitrotls.generator.account import decode_account, object_key
from nitrotls.store import open_store

from pebble_fixtures import PebbleStack, free_port
from system_tools import require_tool

pytestmark = pytest.mark.slow
NAME = "web.nitrotls.test"


def test_http01_with_directory_store(
    deployment: Deployment,
    pebble: PebbleStack,
    pebble_roots: list[bytes],
    challenges: Challenges,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = deployment.store()
    challenges.target = store
    config = deployment.config(ca=acme_section(pebble), key_type="rsa2048")
    outcome = Runner(make_issuer(config, deployment.generator, store=store)).once()
    assert outcome.issued and outcome.seq == 1
    verified, key = open_as_main(deployment, store, NAME, ca_roots=pebble_roots)
    assert verified.domains == (NAME,)
    assert verified.key_type == "rsa2048"
    assert_key_matches_leaf(verified, key)
    # The ACME account is sealed in the store and reused by the next run (a new process would
    # do exactly this: unseal it through KMS with the generator's attestation).
    record = store.get_object(object_key(pebble.directory_url))
    assert record is not None
    account = decode_account(record)
    assert account.uri.startswith("https://")
    caplog.set_level(logging.INFO, logger="nitrotls")
    again = Runner(make_issuer(config, deployment.generator, store=store)).once(force=True)
    assert again.issued and again.seq == 2
    assert any("unsealed from the store" in r.getMessage() for r in caplog.records)
    assert decode_account(store.get_object(object_key(pebble.directory_url)) or b"").uri == (
        account.uri
    )
    open_as_main(deployment, store, NAME, ca_roots=pebble_roots, min_seq=2)


def test_dns01_through_a_hook_command(
    deployment: Deployment, pebble: PebbleStack, pebble_roots: list[bytes], tmp_path: Path
) -> None:
    curl = require_tool("curl")
    hook = tmp_path / "dns-hook.sh"
    hook.write_text(
        "#!/bin/sh\n"
        "# called as: dns-hook.sh add|remove RECORD VALUE\n"
        'case "$1" in\n'
        f'  add) exec {curl} -sf -X POST -d "{{\\"host\\":\\"$2.\\",\\"value\\":\\"$3\\"}}" '
        f"{pebble.challtestsrv_url}/set-txt ;;\n"
        f'  remove) exec {curl} -sf -X POST -d "{{\\"host\\":\\"$2.\\"}}" '
        f"{pebble.challtestsrv_url}/clear-txt ;;\n"
        "esac\n"
    )
    hook.chmod(0o755)
    store = deployment.store()
    config = deployment.config(
        domains=(NAME, "*.apps.nitrotls.test"),
        ca=acme_section(pebble, challenge="dns-01", dns_hook=str(hook)),
    )
    outcome = Runner(make_issuer(config, deployment.generator, store=store)).once()
    assert outcome.issued
    verified, key = open_as_main(deployment, store, NAME, ca_roots=pebble_roots)
    assert set(verified.domains) == {NAME, "*.apps.nitrotls.test"}
    assert_key_matches_leaf(verified, key)


@pytest.fixture
def s3_spec(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        bucket = f"nitrotls-{uuid.uuid4().hex[:12]}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        client.close()
        yield f"s3://{bucket}/bundles?endpoint_url={endpoint}&region=us-east-1"
    finally:
        server.stop()


def test_http01_with_s3_store(
    deployment: Deployment,
    pebble: PebbleStack,
    pebble_roots: list[bytes],
    challenges: Challenges,
    s3_spec: str,
) -> None:
    store = open_store(s3_spec)
    challenges.target = store
    config = deployment.config(ca=acme_section(pebble), store_spec=s3_spec)
    outcome = Runner(make_issuer(config, deployment.generator)).once()
    assert outcome.issued
    verified, key = open_as_main(deployment, store, NAME, ca_roots=pebble_roots)
    assert_key_matches_leaf(verified, key)
    assert store.get_object(object_key(pebble.directory_url)) is not None
    assert not (deployment.store_dir).exists()  # nothing went to the directory store
