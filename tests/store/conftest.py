"""Store fixtures: a moto S3 server on 127.0.0.1, and a store per backend with a fake clock."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from nitrotls.store import BundleStore, DirectoryStore
from store.store_support import FakeClock, make_s3_store


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 in server mode, so boto3 speaks real HTTP (conditional headers included)."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> str:
    """A fresh bucket per test."""
    name = f"nitrotls-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=name)
    client.close()
    return name


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["dir", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[BundleStore]:
    """Each contract test runs once per backend."""
    if request.param == "dir":
        yield DirectoryStore(tmp_path / "store", clock=clock)
        return
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    s3 = make_s3_store(endpoint, bucket, clock)
    yield s3
    s3.close()
