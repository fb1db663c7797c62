"""Issue 3 acceptance, end to end over HTTP: a deployment key policy on the local KMS; a
generator enclave gets a data key, a main enclave decrypts it, everyone else is refused with
AWS's error code (through plain boto3 and through nitrotls's KMSClient); the audit chain holds
and an edit to it is caught at the edited line."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nitrotls.cli import cli
from nitrotls.kms.client import KMSClient
from nitrotls.kms.cms import open_enveloped
from nitrotls.kms.errors import KMSAccessDeniedError, KMSRequestError
from nitrotls.kms.local import LocalKMSServer, verify_log
from nitrotls.kms.policy import build_key_policy
from nitrotls.nsm import SimulatedNSM, measure_image

CONTEXT = {
    "nitrotls:bundle": "0123456789abcdef0123456789abcdef",
    "nitrotls:name": "www.example.test",
    "nitrotls:spki-sha384": "ab" * 48,
}


@dataclass
class Deployment:
    kit: Any
    server: LocalKMSServer
    key_arn: str
    generator: SimulatedNSM
    main: SimulatedNSM
    other: SimulatedNSM
    debug_main: SimulatedNSM

    def client(self) -> KMSClient:
        return KMSClient(
            self.server.endpoint_url,
            access_key_id=self.kit.enclave.access_key,
            secret_access_key=self.kit.enclave.secret,
            max_attempts=1,
        )


@pytest.fixture
def deployment(
    kit: Any, local_kms: LocalKMSServer, admin_kms: Any, make_image: Callable[[str], Path]
) -> Deployment:
    images = {name: make_image(name) for name in ("generator", "main", "other")}
    policy = build_key_policy(
        [measure_image(images["generator"])],
        [measure_image(images["main"])],
        [kit.admin.principal],
        kit.enclave.principal,
    )
    key = admin_kms.create_key(Policy=json.dumps(policy), Description="e2e")["KeyMetadata"]
    admin_kms.create_alias(AliasName="alias/nitrotls-e2e", TargetKeyId=key["KeyId"])
    return Deployment(
        kit,
        local_kms,
        key["Arn"],
        SimulatedNSM(images["generator"]),
        SimulatedNSM(images["main"]),
        SimulatedNSM(images["other"]),
        SimulatedNSM(images["main"], debug=True),
    )


def recipient_for(source: SimulatedNSM) -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    document = source.attest(public_key=spki)
    return key, {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": document}


def error_code(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    return str(caught.value.response["Error"]["Code"])


def test_release_with_nitrotls_client(deployment: Deployment) -> None:
    client = deployment.client()
    with client.generate_data_key("alias/nitrotls-e2e", CONTEXT, deployment.generator) as key:
        assert len(key.plaintext) == 32
        assert key.key_id == deployment.key_arn
        with client.decrypt(key.ciphertext_blob, CONTEXT, deployment.main) as opened:
            assert bytes(opened.data) == bytes(key.plaintext.data)
        blob = key.ciphertext_blob

    refusals = {
        "third image": deployment.other,
        "debug enclave": deployment.debug_main,
        "generator decrypting": deployment.generator,
    }
    for name, source in refusals.items():
        with pytest.raises(KMSAccessDeniedError) as caught:
            client.decrypt(blob, CONTEXT, source)
        assert caught.value.code == "AccessDeniedException", name
    with pytest.raises(KMSAccessDeniedError):
        client.generate_data_key(deployment.key_arn, CONTEXT, deployment.main)
    with pytest.raises(KMSRequestError) as wrong_context:
        client.decrypt(blob, {**CONTEXT, "nitrotls:name": "evil.test"}, deployment.main)
    assert wrong_context.value.code == "InvalidCiphertextException"


def test_release_with_plain_boto3(deployment: Deployment) -> None:
    kms = deployment.kit.boto(deployment.server.endpoint_url, deployment.kit.enclave)
    private, recipient = recipient_for(deployment.generator)
    made = kms.generate_data_key(
        KeyId="alias/nitrotls-e2e",
        KeySpec="AES_256",
        EncryptionContext=CONTEXT,
        Recipient=recipient,
    )
    assert not made.get("Plaintext")
    data_key = open_enveloped(made["CiphertextForRecipient"], private)
    assert len(data_key) == 32
    blob = made["CiphertextBlob"]

    private, recipient = recipient_for(deployment.main)
    opened = kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT, Recipient=recipient)
    assert not opened.get("Plaintext")
    assert opened["KeyId"] == deployment.key_arn
    assert open_enveloped(opened["CiphertextForRecipient"], private) == data_key

    def decrypt_as(source: SimulatedNSM, **changes: Any) -> Callable[[], Any]:
        params = {
            "CiphertextBlob": blob,
            "EncryptionContext": CONTEXT,
            "Recipient": recipient_for(source)[1],
            **changes,
        }
        return lambda: kms.decrypt(**params)

    tampered = bytearray(blob)
    tampered[-20] ^= 0x01
    assert error_code(decrypt_as(deployment.other)) == "AccessDeniedException"
    assert error_code(decrypt_as(deployment.debug_main)) == "AccessDeniedException"
    assert error_code(lambda: kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)) == (
        "AccessDeniedException"
    )
    assert (
        error_code(lambda: kms.generate_data_key(KeyId=deployment.key_arn, KeySpec="AES_256"))
        == "AccessDeniedException"
    )
    # A context the policy admits but the blob was not sealed under: the blob refuses itself.
    wrong_context = {**CONTEXT, "nitrotls:name": "other.example.test"}
    assert error_code(decrypt_as(deployment.main, EncryptionContext=wrong_context)) == (
        "InvalidCiphertextException"
    )
    # No bundle context at all: the key policy refuses before anything is decrypted.
    assert error_code(decrypt_as(deployment.main, EncryptionContext={})) == (
        "AccessDeniedException"
    )
    assert error_code(decrypt_as(deployment.main, CiphertextBlob=bytes(tampered))) == (
        "InvalidCiphertextException"
    )
    wrong_secret = deployment.kit.boto(
        deployment.server.endpoint_url, deployment.kit.enclave, secret="not-the-secret"
    )
    assert error_code(lambda: wrong_secret.decrypt(CiphertextBlob=blob)) == (
        "InvalidSignatureException"
    )
    admin = deployment.kit.boto(deployment.server.endpoint_url, deployment.kit.admin)
    as_admin = {
        "CiphertextBlob": blob,
        "EncryptionContext": CONTEXT,
        "Recipient": recipient_for(deployment.main)[1],
    }
    assert error_code(lambda: admin.decrypt(**as_admin)) == "AccessDeniedException"


def test_audit_chain_records_and_catches_an_edit(deployment: Deployment) -> None:
    client = deployment.client()
    with client.generate_data_key(deployment.key_arn, CONTEXT, deployment.generator) as key:
        secret_forms = [
            bytes(key.plaintext.data).hex(),
            base64.b64encode(bytes(key.plaintext.data)).decode(),
        ]
        with client.decrypt(key.ciphertext_blob, CONTEXT, deployment.main):
            pass
        with pytest.raises(KMSAccessDeniedError):
            client.decrypt(key.ciphertext_blob, CONTEXT, deployment.other)
    path = deployment.server.audit_path
    report = verify_log(path)
    assert report.ok and report.lines >= 5, report.problem

    lines = path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    decrypts = [e for e in entries if e["op"] == "Decrypt"]
    assert [e["decision"] for e in decrypts] == ["allow", "deny"]
    main_pcr0 = deployment.main.image_pcrs[0].hex()
    assert decrypts[0]["pcrs"]["0"] == main_pcr0
    assert decrypts[0]["context"] == CONTEXT
    assert decrypts[0]["caller"] == deployment.kit.enclave.principal
    assert decrypts[0]["key"] == deployment.key_arn
    assert "MainEnclaveDecrypt" in decrypts[0]["reason"]
    assert decrypts[1]["pcrs"]["0"] == deployment.other.image_pcrs[0].hex()
    text = path.read_text()
    for form in secret_forms:  # the data key never reaches the log
        assert form not in text

    runner = CliRunner()
    ok = runner.invoke(cli, ["kms", "audit", "verify", str(path)])
    assert ok.exit_code == 0, ok.output
    assert f"{len(lines)} lines" in ok.output

    edited = 3
    lines[edited - 1] = lines[edited - 1].replace('"decision":"allow"', '"decision":"deny"')
    assert lines[edited - 1] != text.splitlines()[edited - 1]
    path.write_text("\n".join(lines) + "\n")
    broken = runner.invoke(cli, ["kms", "audit", "verify", str(path), "--json"])
    assert broken.exit_code != 0
    result = json.loads(broken.output)
    assert result["broken_line"] == edited and not result["ok"]
    assert result["lines_verified"] == edited - 1
    plain = runner.invoke(cli, ["kms", "audit", "verify", str(path)])
    assert plain.exit_code != 0
    assert f"line {edited}" in str(plain.exception)


def test_untrusted_dev_root_is_refused(
    kit: Any, kms_data_dir: Path, make_image: Callable[[str], Path]
) -> None:
    with LocalKMSServer(kit.config(kms_data_dir, trust_dev_root=False)) as server:
        kms = kit.boto(server.endpoint_url, kit.admin)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        _, recipient = recipient_for(SimulatedNSM(make_image("main")))
        code = error_code(lambda: kms.generate_random(NumberOfBytes=16, Recipient=recipient))
        assert code == "ValidationException"
        code = error_code(
            lambda: kms.generate_data_key(KeyId=key, NumberOfBytes=32, Recipient=recipient)
        )
        assert code == "ValidationException"
