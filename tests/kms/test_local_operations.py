"""KMS semantics of the local server through plain boto3: key ids, states, policies, aliases,
paging, data keys, Recipient checks and the error codes AWS uses for each refusal."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nitrotls.kms.cms import open_enveloped
from nitrotls.kms.local import Credential, LocalKMSServer
from nitrotls.kms.local.errors import AuditError, ServiceError
from nitrotls.kms.local.recipient import RecipientChecker
from nitrotls.nsm import SimulatedNSM, trusted_verifier

OTHER_ACCOUNT = "444455556666"
STRANGER = Credential("stranger", "stranger-secret", f"arn:aws:iam::{OTHER_ACCOUNT}:role/x")


def code(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    return str(caught.value.response["Error"]["Code"])


def spki(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def recipient(document: bytes) -> dict[str, Any]:
    return {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": document}


@pytest.fixture
def server(kit: Any, kms_data_dir: Path) -> Any:
    credentials = (kit.admin, kit.enclave, STRANGER)
    with LocalKMSServer(kit.config(kms_data_dir, credentials=credentials)) as running:
        yield running


@pytest.fixture
def admin(kit: Any, server: LocalKMSServer) -> Any:
    return kit.boto(server.endpoint_url, kit.admin)


def test_every_form_of_key_id(admin: Any) -> None:
    key = admin.create_key(Description="forms")["KeyMetadata"]
    admin.create_alias(AliasName="alias/forms", TargetKeyId=key["KeyId"])
    alias_arn = key["Arn"].replace(f"key/{key['KeyId']}", "alias/forms")
    for form in (key["KeyId"], key["Arn"], "alias/forms", alias_arn):
        assert admin.describe_key(KeyId=form)["KeyMetadata"]["KeyId"] == key["KeyId"]
    for missing in (
        "alias/none",
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "garbage",
        key["Arn"].replace("us-east-1", "eu-west-1"),
    ):
        assert code(lambda m=missing: admin.describe_key(KeyId=m)) == "NotFoundException"


def test_other_accounts_need_the_arn_and_the_policy(kit: Any, server: LocalKMSServer) -> None:
    admin = kit.boto(server.endpoint_url, kit.admin)
    stranger = kit.boto(server.endpoint_url, STRANGER)
    private = admin.create_key()["KeyMetadata"]
    assert code(lambda: stranger.describe_key(KeyId=private["KeyId"])) == "NotFoundException"
    assert code(lambda: stranger.describe_key(KeyId=private["Arn"])) == "AccessDeniedException"
    shared_policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{kit.account}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Effect": "Allow",
                "Principal": {"AWS": STRANGER.principal},
                "Action": ["kms:Encrypt", "kms:Decrypt"],
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:EncryptionContext:tenant": "stranger"}},
            },
        ],
    }
    shared = admin.create_key(Policy=json.dumps(shared_policy))["KeyMetadata"]
    context = {"tenant": "stranger"}
    blob = stranger.encrypt(KeyId=shared["Arn"], Plaintext=b"x", EncryptionContext=context)
    assert (
        stranger.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext=context)[
            "Plaintext"
        ]
        == b"x"
    )
    assert (
        code(
            lambda: stranger.encrypt(
                KeyId=shared["Arn"], Plaintext=b"x", EncryptionContext={"tenant": "admin"}
            )
        )
        == "AccessDeniedException"
    )
    assert code(lambda: stranger.describe_key(KeyId=shared["Arn"])) == "AccessDeniedException"
    assert stranger.list_keys()["Keys"] == []


def test_lockout_check_and_policy_updates(kit: Any, server: LocalKMSServer) -> None:
    admin = kit.boto(server.endpoint_url, kit.admin)
    enclave_only = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": kit.enclave.principal},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        }
    )
    assert code(lambda: admin.create_key(Policy=enclave_only)) == (
        "MalformedPolicyDocumentException"
    )
    assert code(lambda: admin.create_key(Policy='{"Statement": []}')) == (
        "MalformedPolicyDocumentException"
    )
    key = admin.create_key(Policy=enclave_only, BypassPolicyLockoutSafetyCheck=True)
    key_id = key["KeyMetadata"]["KeyId"]
    assert code(lambda: admin.get_key_policy(KeyId=key_id)) == "AccessDeniedException"
    enclave = kit.boto(server.endpoint_url, kit.enclave)
    assert json.loads(enclave.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]) == (
        json.loads(enclave_only)
    )
    assert code(lambda: enclave.get_key_policy(KeyId=key_id, PolicyName="other")) == (
        "NotFoundException"
    )
    opened_up = enclave_only.replace(kit.enclave.principal, f"arn:aws:iam::{kit.account}:root")
    enclave.put_key_policy(KeyId=key_id, PolicyName="default", Policy=opened_up)
    assert admin.get_key_policy(KeyId=key_id)["Policy"] == opened_up


def test_key_states(admin: Any) -> None:
    key_id = admin.create_key()["KeyMetadata"]["KeyId"]
    blob = admin.encrypt(KeyId=key_id, Plaintext=b"state")["CiphertextBlob"]
    admin.disable_key(KeyId=key_id)
    assert admin.describe_key(KeyId=key_id)["KeyMetadata"]["Enabled"] is False
    assert code(lambda: admin.encrypt(KeyId=key_id, Plaintext=b"x")) == "DisabledException"
    assert code(lambda: admin.decrypt(CiphertextBlob=blob)) == "DisabledException"
    admin.enable_key(KeyId=key_id)
    assert admin.decrypt(CiphertextBlob=blob)["Plaintext"] == b"state"
    scheduled = admin.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert scheduled["KeyState"] == "PendingDeletion" and scheduled["PendingWindowInDays"] == 7
    meta = admin.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion"
    assert meta["DeletionDate"] - datetime.now(UTC) > timedelta(days=6)
    for call in (
        lambda: admin.decrypt(CiphertextBlob=blob),
        lambda: admin.enable_key(KeyId=key_id),
        lambda: admin.schedule_key_deletion(KeyId=key_id),
        lambda: admin.create_alias(AliasName="alias/late", TargetKeyId=key_id),
    ):
        assert code(call) == "KMSInvalidStateException"
    assert code(lambda: admin.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=3)) == (
        "ValidationException"
    )
    admin.cancel_key_deletion(KeyId=key_id)
    assert admin.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"


def test_paging_and_aliases(admin: Any) -> None:
    keys = [admin.create_key()["KeyMetadata"]["KeyId"] for _ in range(5)]
    pages = list(admin.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3
    assert [k["KeyId"] for page in pages for k in page["Keys"]] == keys
    admin.create_alias(AliasName="alias/a", TargetKeyId=keys[0])
    admin.create_alias(AliasName="alias/b/c_d-e", TargetKeyId=keys[1])
    assert [a["AliasName"] for a in admin.list_aliases(KeyId=keys[1])["Aliases"]] == [
        "alias/b/c_d-e"
    ]
    assert len(admin.list_aliases()["Aliases"]) == 2
    assert code(lambda: admin.create_alias(AliasName="alias/a", TargetKeyId=keys[2])) == (
        "AlreadyExistsException"
    )
    assert code(lambda: admin.create_alias(AliasName="alias/aws/x", TargetKeyId=keys[2])) == (
        "InvalidAliasNameException"
    )
    assert code(lambda: admin.create_alias(AliasName="alias/sp ace", TargetKeyId=keys[2])) == (
        "ValidationException"
    )
    assert code(lambda: admin.create_alias(AliasName="alias/z", TargetKeyId="alias/a")) == (
        "ValidationException"
    )


def test_data_keys_and_random(admin: Any) -> None:
    key_id = admin.create_key()["KeyMetadata"]["KeyId"]
    assert len(admin.generate_data_key(KeyId=key_id, KeySpec="AES_128")["Plaintext"]) == 16
    made = admin.generate_data_key(KeyId=key_id, NumberOfBytes=64, EncryptionContext={"a": "b"})
    assert len(made["Plaintext"]) == 64
    opened = admin.decrypt(CiphertextBlob=made["CiphertextBlob"], EncryptionContext={"a": "b"})
    assert opened["Plaintext"] == made["Plaintext"]
    assert code(lambda: admin.generate_data_key(KeyId=key_id)) == "ValidationException"
    assert (
        code(lambda: admin.generate_data_key(KeyId=key_id, KeySpec="AES_256", NumberOfBytes=32))
        == "ValidationException"
    )
    assert len(admin.generate_random(NumberOfBytes=1024)["Plaintext"]) == 1024
    other = admin.create_key()["KeyMetadata"]["KeyId"]
    assert (
        code(
            lambda: admin.decrypt(
                CiphertextBlob=made["CiphertextBlob"], KeyId=other, EncryptionContext={"a": "b"}
            )
        )
        == "IncorrectKeyException"
    )
    assert code(lambda: admin.encrypt(KeyId=key_id, Plaintext=b"x", DryRun=True)) == (
        "DryRunOperationException"
    )
    assert (
        code(
            lambda: admin.encrypt(
                KeyId=key_id, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256"
            )
        )
        == "InvalidKeyUsageException"
    )
    assert code(lambda: admin.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")) == (
        "UnsupportedOperationException"
    )


def test_recipient_documents(admin: Any, make_image: Callable[[str], Path]) -> None:
    enclave = SimulatedNSM(make_image("main"))
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    answer = admin.generate_random(
        NumberOfBytes=48, Recipient=recipient(enclave.attest(public_key=spki(private)))
    )
    assert not answer.get("Plaintext")
    assert len(open_enveloped(answer["CiphertextForRecipient"], private)) == 48

    key_id = admin.create_key()["KeyMetadata"]["KeyId"]
    made = admin.generate_data_key(
        KeyId=key_id,
        KeySpec="AES_256",
        Recipient=recipient(enclave.attest(public_key=spki(private))),
    )
    opened = admin.decrypt(
        CiphertextBlob=made["CiphertextBlob"],
        Recipient=recipient(enclave.attest(public_key=spki(private))),
    )
    assert not opened.get("Plaintext")
    assert open_enveloped(opened["CiphertextForRecipient"], private) == open_enveloped(
        made["CiphertextForRecipient"], private
    )

    ec_key = ec.generate_private_key(ec.SECP384R1())
    bad_documents = {
        "EC key": enclave.attest(public_key=spki(ec_key)),
        "no key": enclave.attest(),
        "small RSA key": enclave.attest(
            public_key=spki(rsa.generate_private_key(public_exponent=65537, key_size=1024))
        ),
        "not a document": b"\x84\x40\xa0\x40\x40",
    }
    for name, document in bad_documents.items():
        for call in (
            lambda d=document: admin.generate_random(NumberOfBytes=8, Recipient=recipient(d)),
            lambda d=document: admin.decrypt(
                CiphertextBlob=made["CiphertextBlob"], Recipient=recipient(d)
            ),
        ):
            assert code(call) == "ValidationException", name


def test_old_recipient_documents_are_refused(make_image: Callable[[str], Path]) -> None:
    checker = RecipientChecker(trusted_verifier(True), timedelta(minutes=5))
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    document = SimulatedNSM(make_image("main")).attest(public_key=spki(private))
    now = datetime.now(UTC)
    assert checker.check(document, now + timedelta(minutes=4)).pcrs[0] != bytes(48)
    with pytest.raises(ServiceError) as caught:
        checker.check(document, now + timedelta(minutes=6))
    assert caught.value.code == "ValidationException"
    assert "old" in caught.value.message


def test_nothing_is_answered_that_the_audit_log_did_not_record(
    kit: Any, server: LocalKMSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = kit.boto(server.endpoint_url, kit.admin)
    key_id = admin.create_key()["KeyMetadata"]["KeyId"]

    def broken(event: object) -> None:
        raise AuditError("disk full")

    monkeypatch.setattr(server.service.audit, "record", broken)
    with pytest.raises(ClientError) as caught:
        admin.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert caught.value.response["Error"]["Code"] == "KMSInternalException"
    assert "Plaintext" not in caught.value.response
