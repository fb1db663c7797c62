"""A one-machine deployment for generator tests: simulated enclaves, local KMS, stores, CAs.

The generator and main enclaves are ``SimulatedNSM`` over two small image directories with
different content, so they have different PCRs. The local KMS runs in a thread; its key policy
lets the generator's measurements GenerateDataKey (and Decrypt only its own ACME account), and
the main enclave's measurements Decrypt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import serialization

from nitrotls.attestation import Policy, Verifier
from nitrotls.ca import ChallengeServer, start_responder
from nitrotls.config import CASection, Config, GeneratorSection, KMSSection, StoreSection
from nitrotls.kms.client import KMSClient
from nitrotls.kms.local import DEV_ACCESS_KEY, DEV_PRINCIPAL, DEV_SECRET, running_server
from nitrotls.nsm import SimulatedNSM, measure_image, trusted_verifier
from nitrotls.store import BundleStore, DirectoryStore

from pebble_fixtures import PebbleStack, pebble_stack
from system_tools import require_tool

ALIAS = "alias/nitrotls-test"
REPO = Path(__file__).resolve().parents[2]


def pcr_condition(pcrs: Mapping[int, bytes]) -> dict[str, str]:
    return {f"kms:RecipientAttestation:PCR{i}": pcrs[i].hex() for i in (0, 1, 2)}


def key_policy(generator: Mapping[int, bytes], main: Mapping[int, bytes]) -> dict[str, Any]:
    principal = {"AWS": DEV_PRINCIPAL}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Admin",
                "Effect": "Allow",
                "Principal": principal,
                "Action": ["kms:PutKeyPolicy", "kms:CreateAlias", "kms:Describe*", "kms:Get*"],
                "Resource": "*",
            },
            {
                "Sid": "GeneratorSeals",
                "Effect": "Allow",
                "Principal": principal,
                "Action": "kms:GenerateDataKey",
                "Resource": "*",
                "Condition": {"StringEqualsIgnoreCase": pcr_condition(generator)},
            },
            {
                "Sid": "GeneratorOpensItsAcmeAccountOnly",
                "Effect": "Allow",
                "Principal": principal,
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {
                    "StringEqualsIgnoreCase": pcr_condition(generator),
                    "Null": {"kms:EncryptionContext:nitrotls:acme-account": "false"},
                },
            },
            {
                "Sid": "MainOpensBundlesOnly",
                "Effect": "Allow",
                "Principal": principal,
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {
                    "StringEqualsIgnoreCase": pcr_condition(main),
                    "Null": {"kms:EncryptionContext:nitrotls:bundle": "false"},
                },
            },
        ],
    }


@dataclass
class Deployment:
    home: Path
    workdir: Path
    generator_image: Path
    main_image: Path
    kms_endpoint: str
    key_arn: str
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def generator(self) -> SimulatedNSM:
        return SimulatedNSM(self.generator_image)

    @property
    def main(self) -> SimulatedNSM:
        return SimulatedNSM(self.main_image)

    @property
    def generator_pcrs(self) -> dict[int, bytes]:
        return measure_image(self.generator_image)

    @property
    def verifier(self) -> Verifier:
        return trusted_verifier(True)

    @property
    def generator_policy(self) -> Policy:
        return Policy(accepted_pcrs=(self.generator_pcrs,))

    @property
    def store_dir(self) -> Path:
        return self.workdir / "store"

    def store(self) -> DirectoryStore:
        return DirectoryStore(self.store_dir)

    def kms(self) -> KMSClient:
        return KMSClient(endpoint_url=self.kms_endpoint, max_attempts=2)

    def config(
        self,
        *,
        domains: tuple[str, ...] = ("web.nitrotls.test",),
        ca: CASection | None = None,
        store_spec: str | None = None,
        **generator: Any,
    ) -> Config:
        settings: dict[str, Any] = {"lease_ttl": 30.0, "retry_initial": 0.05, "retry_max": 0.2}
        settings.update(generator)
        return Config(
            generator=GeneratorSection(domains=domains, **settings),
            kms=KMSSection(endpoint=self.kms_endpoint, key_id=ALIAS),
            store=StoreSection(spec=store_spec or f"dir:{self.store_dir}"),
            ca=ca or CASection(),
        )

    def pcr_file(self, which: str) -> Path:
        image = self.generator_image if which == "generator" else self.main_image
        path = self.workdir / f"{which}-pcrs.json"
        path.write_text(json.dumps({f"PCR{i}": v.hex() for i, v in measure_image(image).items()}))
        return path

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.extra_env}

    def cli(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``nitrotls ARGS`` in a subprocess (a separate enclave process)."""
        return subprocess.run(
            [sys.executable, "-c", "from nitrotls.cli import main; main()", *args],
            capture_output=True,
            text=True,
            env={**self.env(), **(env or {})},
            timeout=timeout,
            check=False,
        )


def make_image(path: Path, content: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "app.py").write_text(content)
    return path


@pytest.fixture
def deployment(
    nitrotls_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    aws = {
        "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in aws.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "NITROTLS_ENCLAVE", "NITROTLS_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    generator_image = make_image(tmp_path / "generator-image", "print('generator')\n")
    main_image = make_image(tmp_path / "main-image", "print('main enclave')\n")
    with running_server(trust_dev_root=True) as endpoint:
        client = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1")
        policy = key_policy(measure_image(generator_image), measure_image(main_image))
        arn = client.create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]
        client.create_alias(AliasName=ALIAS, TargetKeyId=arn)
        yield Deployment(
            home=nitrotls_home,
            workdir=tmp_path,
            generator_image=generator_image,
            main_image=main_image,
            kms_endpoint=endpoint,
            key_arn=arn,
            extra_env={"NITROTLS_HOME": str(nitrotls_home), **aws},
        )


@dataclass
class Challenges:
    """The responder's view of whichever store the current test's generator writes to."""

    target: BundleStore | None = None

    def get_challenge(self, token: str) -> str | None:
        return self.target.get_challenge(token) if self.target is not None else None


@pytest.fixture(scope="session")
def challenges() -> Challenges:
    return Challenges()


@pytest.fixture(scope="session")
def responder(challenges: Challenges) -> Iterator[ChallengeServer]:
    server, thread = start_responder(challenges, "127.0.0.1", 0)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def pebble(
    tmp_path_factory: pytest.TempPathFactory, responder: ChallengeServer
) -> Iterator[PebbleStack]:
    """One Pebble for the generator tests, validating HTTP-01 through ``responder``."""
    require_tool("pebble")
    require_tool("pebble-challtestsrv")
    with pebble_stack(
        tmp_path_factory.mktemp("pebble"), http_port=int(responder.server_address[1])
    ) as stack:
        yield stack


@pytest.fixture(scope="session")
def pebble_roots(pebble: PebbleStack) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in pebble.root_certificates()]


def acme_section(pebble: PebbleStack, **changes: object) -> CASection:
    """``[ca]`` for the test Pebble."""
    fields: dict[str, object] = {
        "server": f"acme:{pebble.directory_url}",
        "ca_bundle": pebble.ca_bundle,
        "timeout": 30.0,
    }
    fields.update(changes)
    return CASection(**fields)  # type: ignore[arg-type]
