"""The demo's KMS side: two principals, the server's credential table, and the key with policy.

As on AWS, the person who manages the key (the demo itself, on the host) and the enclaves that
use it are different principals: the administrator may create the key and set its policy but
never use it; the enclave role may use it only with an attestation document whose PCRs the
policy names (``nitrotls.kms.policy.build_key_policy``). Secrets are fresh random values for
each run, handed to the local KMS through its environment: none is written to disk.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nitrotls.kms.policy import build_key_policy
from nitrotls.nsm import write_atomic

ACCOUNT = "000000000000"
ADMIN_ACCESS_KEY = "nitrotls-demo-admin"
ADMIN_ARN = f"arn:aws:iam::{ACCOUNT}:role/nitrotls-demo-admin"
ENCLAVE_ACCESS_KEY = "nitrotls-demo-enclave"
ENCLAVE_ARN = f"arn:aws:iam::{ACCOUNT}:role/nitrotls-demo-enclave"
ADMIN_SECRET_ENV = "NITROTLS_DEMO_KMS_ADMIN_SECRET"  # noqa: S105 - a variable name
ENCLAVE_SECRET_ENV = "NITROTLS_DEMO_KMS_ENCLAVE_SECRET"  # noqa: S105 - a variable name
REGION = "us-east-1"
KEY_DESCRIPTION = "nitrotls demo: seals TLS keys; only attested demo enclaves may use it"


@dataclass(frozen=True)
class Credentials:
    """This run's two KMS credentials (random secrets, never stored)."""

    admin_secret: str
    enclave_secret: str

    @classmethod
    def fresh(cls) -> Credentials:
        return cls(secrets.token_urlsafe(32), secrets.token_urlsafe(32))

    def server_env(self) -> dict[str, str]:
        """What the local KMS needs to check both principals' signatures."""
        return {ADMIN_SECRET_ENV: self.admin_secret, ENCLAVE_SECRET_ENV: self.enclave_secret}

    def enclave_env(self) -> dict[str, str]:
        """boto3's environment credentials for code inside an enclave."""
        return {
            "AWS_ACCESS_KEY_ID": ENCLAVE_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.enclave_secret,
            "AWS_DEFAULT_REGION": REGION,
        }


def write_server_config(path: Path, data_dir: Path) -> None:
    """The local KMS's configuration: its state directory and the two principals."""
    text = f"""# Written by `nitrotls demo`: the local KMS's principals (secrets: environment only).
region = "{REGION}"
data_dir = {json.dumps(str(data_dir))}
trust_dev_root = true

[[credentials]]
access_key = "{ADMIN_ACCESS_KEY}"
secret_env = "{ADMIN_SECRET_ENV}"
principal = "{ADMIN_ARN}"

[[credentials]]
access_key = "{ENCLAVE_ACCESS_KEY}"
secret_env = "{ENCLAVE_SECRET_ENV}"
principal = "{ENCLAVE_ARN}"
"""
    write_atomic(path, text.encode(), mode=0o600)


def demo_policy(
    generator_pcrs: Mapping[int, bytes], main_pcrs: Mapping[int, bytes]
) -> dict[str, Any]:
    """Generator measurements may GenerateDataKey, main measurements may Decrypt; nobody else."""
    return build_key_policy([generator_pcrs], [main_pcrs], [ADMIN_ARN], ENCLAVE_ARN)


@dataclass(frozen=True)
class KeyResult:
    key_id: str
    created: bool
    policy_updated: bool


def ensure_key(
    endpoint_url: str,
    credentials: Credentials,
    policy: Mapping[str, Any],
    known_key_id: str | None,
) -> KeyResult:
    """Reuse ``known_key_id`` (setting ``policy`` if it changed) or create a key with it."""
    client = _admin_client(endpoint_url, credentials)
    if known_key_id is not None:
        reused = _reuse(client, known_key_id, policy)
        if reused is not None:
            return reused
    answer = client.create_key(
        Policy=json.dumps(policy),
        Description=KEY_DESCRIPTION,
        KeyUsage="ENCRYPT_DECRYPT",
        KeySpec="SYMMETRIC_DEFAULT",
    )
    return KeyResult(str(answer["KeyMetadata"]["KeyId"]), created=True, policy_updated=False)


def _reuse(client: Any, key_id: str, policy: Mapping[str, Any]) -> KeyResult | None:
    from botocore.exceptions import ClientError

    try:
        metadata = client.describe_key(KeyId=key_id)["KeyMetadata"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "NotFoundException":
            return None
        raise
    if metadata.get("KeyState") != "Enabled":
        return None
    current = json.loads(client.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    if current == policy:
        return KeyResult(key_id, created=False, policy_updated=False)
    client.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(policy))
    return KeyResult(key_id, created=False, policy_updated=True)


def _admin_client(endpoint_url: str, credentials: Credentials) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=ADMIN_ACCESS_KEY,
        aws_secret_access_key=credentials.admin_secret,
        region_name=REGION,
    )
    config = Config(
        retries={"total_max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=15,
    )
    return session.client("kms", endpoint_url=endpoint_url, config=config)
