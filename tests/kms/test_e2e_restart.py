"""Issue 3 acceptance: keys, aliases, policies, states and every earlier blob survive a restart
(stop the server, start a new one on the same data directory)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nitrotls.kms.cms import open_enveloped
from nitrotls.kms.local import LocalKMSServer, verify_log
from nitrotls.kms.policy import build_key_policy
from nitrotls.nsm import SimulatedNSM, measure_image


def attested(source: SimulatedNSM) -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, {
        "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
        "AttestationDocument": source.attest(public_key=spki),
    }


def test_everything_survives_a_restart(
    kit: Any, kms_data_dir: Path, make_image: Callable[[str], Path]
) -> None:
    generator, main = make_image("generator"), make_image("main")
    policy = json.dumps(
        build_key_policy(
            [measure_image(generator)],
            [measure_image(main)],
            [kit.admin.principal],
            kit.enclave.principal,
        )
    )
    context = {"nitrotls:bundle": "restart", "nitrotls:name": "restart.test"}
    plain_blobs: list[tuple[bytes, bytes, dict[str, str]]] = []

    with LocalKMSServer(kit.config(kms_data_dir)) as first:
        admin = kit.boto(first.endpoint_url, kit.admin)
        enclave = kit.boto(first.endpoint_url, kit.enclave)
        attested_key = admin.create_key(Policy=policy, Description="attested")["KeyMetadata"]
        open_key = admin.create_key(Description="open")["KeyMetadata"]
        disabled_key = admin.create_key(Description="disabled")["KeyMetadata"]
        admin.create_alias(AliasName="alias/attested", TargetKeyId=attested_key["KeyId"])
        admin.create_alias(AliasName="alias/open", TargetKeyId=open_key["Arn"])
        admin.disable_key(KeyId=disabled_key["KeyId"])
        for size, ctx in ((1, {}), (100, context), (4096, {"a": "b", "c": "d"})):
            data = bytes(range(256)) * (size // 256) + bytes(size % 256)
            blob = admin.encrypt(KeyId="alias/open", Plaintext=data, EncryptionContext=ctx)
            plain_blobs.append((blob["CiphertextBlob"], data, ctx))
        private, recipient = attested(SimulatedNSM(generator))
        made = enclave.generate_data_key(
            KeyId="alias/attested",
            NumberOfBytes=32,
            EncryptionContext=context,
            Recipient=recipient,
        )
        data_key = open_enveloped(made["CiphertextForRecipient"], private)
        before = {
            "keys": admin.list_keys()["Keys"],
            "aliases": admin.list_aliases()["Aliases"],
            "policy": admin.get_key_policy(KeyId=attested_key["KeyId"])["Policy"],
            "metadata": [
                admin.describe_key(KeyId=k["KeyId"])["KeyMetadata"]
                for k in (attested_key, open_key, disabled_key)
            ],
        }
        lines_before = verify_log(first.audit_path).lines

    with LocalKMSServer(kit.config(kms_data_dir)) as second:
        assert second.endpoint_url != ""  # a fresh port, same state
        admin = kit.boto(second.endpoint_url, kit.admin)
        enclave = kit.boto(second.endpoint_url, kit.enclave)
        after = {
            "keys": admin.list_keys()["Keys"],
            "aliases": admin.list_aliases()["Aliases"],
            "policy": admin.get_key_policy(KeyId=attested_key["KeyId"])["Policy"],
            "metadata": [
                admin.describe_key(KeyId=k["KeyId"])["KeyMetadata"]
                for k in (attested_key, open_key, disabled_key)
            ],
        }
        assert after == before
        assert after["metadata"][2]["KeyState"] == "Disabled"
        assert json.loads(after["policy"]) == json.loads(policy)
        for blob, data, ctx in plain_blobs:
            assert admin.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == data
        private, recipient = attested(SimulatedNSM(main))
        opened = enclave.decrypt(
            CiphertextBlob=made["CiphertextBlob"], EncryptionContext=context, Recipient=recipient
        )
        assert open_enveloped(opened["CiphertextForRecipient"], private) == data_key
        # The policy still binds after the restart: the generator may not decrypt.
        _, recipient = attested(SimulatedNSM(generator))
        with pytest.raises(ClientError) as refused:
            enclave.decrypt(
                CiphertextBlob=made["CiphertextBlob"],
                EncryptionContext=context,
                Recipient=recipient,
            )
        assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
        audit_path = second.audit_path

    report = verify_log(audit_path)  # one chain across both runs
    assert report.ok, report.problem
    assert report.lines > lines_before
