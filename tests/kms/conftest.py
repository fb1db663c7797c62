"""Fixtures for the KMS tests: a local KMS server with an administrator and an enclave role,
boto3 clients signed as either, and simulated enclave images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from nitrotls.kms.local import DEV_CREDENTIAL, Credential, LocalKMSServer, ServerConfig

ACCOUNT = "111122223333"
ADMIN = Credential("admin-access", "admin-secret", f"arn:aws:iam::{ACCOUNT}:role/kms-admin")
ENCLAVE = Credential("enclave-access", "enclave-secret", f"arn:aws:iam::{ACCOUNT}:role/enclave")


def local_config(data_dir: Path, **changes: Any) -> ServerConfig:
    """127.0.0.1, any free port, the dev root trusted, admin + enclave + dev credentials."""
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "trust_dev_root": True,
        "credentials": (ADMIN, ENCLAVE, DEV_CREDENTIAL),
        "data_dir": data_dir,
    }
    settings.update(changes)
    return ServerConfig(**settings)


def boto_kms(endpoint_url: str, credential: Credential, secret: str | None = None) -> Any:
    """A plain boto3 KMS client; no retries, so every refusal surfaces at once."""
    return boto3.client(
        "kms",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=credential.access_key,
        aws_secret_access_key=secret if secret is not None else credential.secret,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


@dataclass(frozen=True)
class LocalKMSKit:
    """What the local-KMS tests share, handed out by the ``kit`` fixture (test modules here are
    not importable by one another)."""

    account: str = ACCOUNT
    admin: Credential = ADMIN
    enclave: Credential = ENCLAVE

    @staticmethod
    def config(data_dir: Path, **changes: Any) -> ServerConfig:
        return local_config(data_dir, **changes)

    @staticmethod
    def boto(endpoint_url: str, credential: Credential, secret: str | None = None) -> Any:
        return boto_kms(endpoint_url, credential, secret)

    @staticmethod
    def sign(
        endpoint_url: str,
        target: str,
        body: bytes,
        credential: Credential,
        content_type: str = "application/x-amz-json-1.1",
    ) -> dict[str, str]:
        """SigV4 headers (botocore's signer) for a hand-made request to ``endpoint_url``/."""
        request = AWSRequest(
            method="POST",
            url=endpoint_url + "/",
            data=body,
            headers={"X-Amz-Target": target, "Content-Type": content_type},
        )
        keys = Credentials(credential.access_key, credential.secret)
        SigV4Auth(keys, "kms", "us-east-1").add_auth(request)
        return {name: str(value) for name, value in request.headers.items()}


@pytest.fixture
def kit() -> LocalKMSKit:
    return LocalKMSKit()


@pytest.fixture
def kms_data_dir(nitrotls_home: Path) -> Path:
    return nitrotls_home / "kms"


@pytest.fixture
def local_kms(kms_data_dir: Path) -> Iterator[LocalKMSServer]:
    with LocalKMSServer(local_config(kms_data_dir)) as server:
        yield server


@pytest.fixture
def admin_kms(local_kms: LocalKMSServer) -> Any:
    return boto_kms(local_kms.endpoint_url, ADMIN)


@pytest.fixture
def enclave_kms(local_kms: LocalKMSServer) -> Any:
    return boto_kms(local_kms.endpoint_url, ENCLAVE)


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[[str], Path]:
    """A simulated enclave image (a file) whose content, hence PCR0/PCR2, is its name."""

    def make(name: str) -> Path:
        path = tmp_path / f"{name}.img"
        path.write_bytes(f"simulated enclave image {name}\n".encode())
        return path

    return make
