"""The generated key policy: structure, conditions, and what administrators can (not) do."""

from __future__ import annotations

import fnmatch
import json
import os
from typing import Any

import botocore.session
import pytest

from nitrotls.kms.errors import KMSPolicyDocumentError
from nitrotls.kms.policy import ADMIN_ACTIONS, build_key_policy

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/nitrotls-enclave"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/KeyAdmin"
ADMIN2 = f"arn:aws:iam::{ACCOUNT}:user/alice"

# Actions that use key material, or hand out the right to (a grant bypasses PCR conditions).
CRYPTO_ACTIONS = {
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:GenerateMac",
    "kms:VerifyMac",
    "kms:Sign",
    "kms:Verify",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:DeriveSharedSecret",
    "kms:GenerateRandom",
    "kms:CreateGrant",
}


def pcrs(seed: int, *, pcr8: bytes | None = None) -> dict[int, bytes]:
    values = {index: bytes([seed + index]) * 48 for index in range(16)}
    values[8] = bytes(48) if pcr8 is None else pcr8
    return values


def kms_action_catalog() -> set[str]:
    """Every KMS API action, from botocore's model (ReEncrypt is two IAM actions)."""
    model = botocore.session.get_session().get_service_model("kms")
    actions = {f"kms:{name}" for name in model.operation_names}
    actions.discard("kms:ReEncrypt")
    return actions | {"kms:ReEncryptFrom", "kms:ReEncryptTo"}


def matches(pattern: str, action: str) -> bool:
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


def by_sid(policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {statement["Sid"]: statement for statement in policy["Statement"]}


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def basic(**kwargs: Any) -> dict[str, Any]:
    return build_key_policy([pcrs(1)], [pcrs(100)], [ADMIN], ROLE, **kwargs)


def test_structure() -> None:
    policy = basic()
    assert policy["Version"] == "2012-10-17"
    sids = [statement["Sid"] for statement in policy["Statement"]]
    assert len(sids) == len(set(sids))
    for statement in policy["Statement"]:
        assert statement["Effect"] in ("Allow", "Deny")
        assert statement["Resource"] == "*"
        assert "AWS" in statement["Principal"]
    assert json.loads(json.dumps(policy)) == policy


def test_generator_may_generate_and_main_may_decrypt() -> None:
    generator, main = pcrs(1), pcrs(100)
    statements = by_sid(build_key_policy([generator], [main], [ADMIN], ROLE))
    gen = statements["GeneratorGenerateDataKey1"]
    dec = statements["MainEnclaveDecrypt1"]
    assert (gen["Effect"], gen["Action"], gen["Principal"]) == (
        "Allow",
        "kms:GenerateDataKey",
        {"AWS": ROLE},
    )
    assert (dec["Effect"], dec["Action"], dec["Principal"]) == (
        "Allow",
        "kms:Decrypt",
        {"AWS": ROLE},
    )
    account = statements["GeneratorDecryptAcmeAccount1"]
    assert (account["Effect"], account["Action"]) == ("Allow", "kms:Decrypt")
    for statement, measured in ((gen, generator), (dec, main), (account, generator)):
        assert statement["Condition"]["StringEqualsIgnoreCase"] == {
            f"kms:RecipientAttestation:PCR{index}": measured[index].hex() for index in (0, 1, 2)
        }
    assert list(gen["Condition"]) == ["StringEqualsIgnoreCase"]
    assert dec["Condition"]["Null"] == {"kms:EncryptionContext:nitrotls:bundle": "false"}
    assert account["Condition"]["Null"] == {"kms:EncryptionContext:nitrotls:acme-account": "false"}


def test_hex_is_lowercase() -> None:
    upper = {index: bytes.fromhex("AB" * 48) for index in (0, 1, 2)}
    policy = build_key_policy([upper], [pcrs(100)], [ADMIN], ROLE)
    values = by_sid(policy)["GeneratorGenerateDataKey1"]["Condition"]["StringEqualsIgnoreCase"]
    assert set(values.values()) == {"ab" * 48}
    text = json.dumps(policy)
    assert "AB" * 48 not in text


def test_several_main_sets_give_one_statement_each() -> None:
    mains = [pcrs(100), pcrs(150), pcrs(100), pcrs(200)]  # one duplicate
    statements = by_sid(build_key_policy([pcrs(1)], mains, [ADMIN], ROLE))
    decrypts = [s for sid, s in statements.items() if sid.startswith("MainEnclaveDecrypt")]
    assert len(decrypts) == 3
    seen = [
        s["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:PCR0"] for s in decrypts
    ]
    assert seen == [pcrs(n)[0].hex() for n in (100, 150, 200)]


def test_null_deny_without_attestation() -> None:
    deny = by_sid(basic())["DenyKeyReleaseWithoutAttestation"]
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == {"AWS": "*"}
    assert set(deny["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
    assert deny["Condition"] == {"Null": {"kms:RecipientAttestation:PCR0": "true"}}


def test_grants_are_denied_to_everyone() -> None:
    deny = by_sid(basic())["DenyGrantsWhichBypassAttestation"]
    assert (deny["Effect"], deny["Action"], deny["Principal"]) == (
        "Deny",
        "kms:CreateGrant",
        {"AWS": "*"},
    )


def test_admin_wildcards_match_no_crypto_action() -> None:
    catalog = kms_action_catalog()
    assert CRYPTO_ACTIONS - {"kms:ReEncryptFrom", "kms:ReEncryptTo"} <= catalog
    allow = by_sid(build_key_policy([pcrs(1)], [pcrs(100)], [ADMIN, ADMIN2], ROLE))[
        "AdministratorsManageTheKey"
    ]
    assert allow["Principal"] == {"AWS": [ADMIN, ADMIN2]}
    assert allow["Action"] == list(ADMIN_ACTIONS)
    granted = {action for action in catalog for p in allow["Action"] if matches(p, action)}
    assert not granted & CRYPTO_ACTIONS
    for needed in ("kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:DescribeKey"):
        assert needed in granted
    for pattern in allow["Action"]:  # no pattern is dead (a typo would be)
        assert any(matches(pattern, action) for action in catalog), pattern


def test_admins_are_denied_crypto_use() -> None:
    deny = by_sid(build_key_policy([pcrs(1)], [pcrs(100)], [ADMIN, ADMIN2], ROLE))[
        "AdministratorsNeverUseTheKey"
    ]
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == {"AWS": [ADMIN, ADMIN2]}
    denied = {a for a in kms_action_catalog() for p in deny["Action"] if matches(p, a)}
    for action in ("Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext"):
        assert f"kms:{action}" in denied
    assert {"kms:ReEncryptFrom", "kms:ReEncryptTo"} <= denied


def test_no_statement_names_the_account_root() -> None:
    assert ":root" not in json.dumps(basic())


@pytest.mark.parametrize(
    ("pcr8", "include", "expected"),
    [
        (None, None, False),  # zero PCR8: an unsigned image
        (b"\x08" * 48, None, True),
        (b"\x08" * 48, False, False),
        (None, True, True),
    ],
)
def test_pcr8(pcr8: bytes | None, include: bool | None, expected: bool) -> None:
    generator = pcrs(1, pcr8=pcr8)
    policy = build_key_policy([generator], [pcrs(100)], [ADMIN], ROLE, include_pcr8=include)
    condition = by_sid(policy)["GeneratorGenerateDataKey1"]["Condition"]["StringEqualsIgnoreCase"]
    assert ("kms:RecipientAttestation:PCR8" in condition) is expected
    if expected:
        assert condition["kms:RecipientAttestation:PCR8"] == generator[8].hex()


def test_pcr8_required_but_missing() -> None:
    without = {index: bytes([index + 1]) * 48 for index in (0, 1, 2)}
    with pytest.raises(KMSPolicyDocumentError, match="no PCR8"):
        build_key_policy([without], [pcrs(100)], [ADMIN], ROLE, include_pcr8=True)


def test_account_id_adds_caller_account() -> None:
    condition = by_sid(basic(account_id=ACCOUNT))["MainEnclaveDecrypt1"]["Condition"]
    assert condition["StringEquals"] == {"kms:CallerAccount": ACCOUNT}
    assert "StringEquals" not in by_sid(basic())["MainEnclaveDecrypt1"]["Condition"]


def test_debug_measurements_need_allow_debug() -> None:
    zeros = {index: bytes(48) for index in range(16)}
    with pytest.raises(KMSPolicyDocumentError, match="debug"):
        build_key_policy([pcrs(1)], [zeros], [ADMIN], ROLE)
    policy = build_key_policy([pcrs(1)], [zeros], [ADMIN], ROLE, allow_debug=True)
    assert by_sid(policy)["MainEnclaveDecrypt1"]


REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("no generator", {"generator_pcrs": []}, "at least one generator"),
    ("no main", {"main_pcrs": []}, "at least one main"),
    ("no admin", {"admin_arns": []}, "at least one administrator"),
    ("root admin", {"admin_arns": [f"arn:aws:iam::{ACCOUNT}:root"]}, "account root"),
    ("role is admin", {"admin_arns": [ROLE]}, "both the enclave role and an administrator"),
    ("bad admin ARN", {"admin_arns": ["alice"]}, "not an IAM role or user ARN"),
    ("wildcard admin", {"admin_arns": ["*"]}, "not an IAM role or user ARN"),
    ("user as enclave role", {"enclave_role_arn": ADMIN2}, "must be an IAM role"),
    ("bad enclave role", {"enclave_role_arn": "arn:aws:iam::1:role/x"}, "not an IAM role"),
    ("missing PCR2", {"main_pcrs": [{0: b"\x01" * 48, 1: b"\x02" * 48}]}, "no PCR2"),
    ("short PCR", {"main_pcrs": [{0: b"\x01" * 32, 1: b"\x01" * 48, 2: b"\x01" * 48}]}, "32 bytes"),
    ("other account", {"account_id": "999999999999"}, "not 999999999999"),
]


@pytest.mark.parametrize(
    ("changes", "message"), [(c, m) for _, c, m in REFUSALS], ids=[n for n, _, _ in REFUSALS]
)
def test_unsafe_inputs_are_refused(changes: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "generator_pcrs": [pcrs(1)],
        "main_pcrs": [pcrs(100)],
        "admin_arns": [ADMIN],
        "enclave_role_arn": ROLE,
    }
    arguments.update(changes)
    with pytest.raises(KMSPolicyDocumentError, match=message):
        build_key_policy(**arguments)


def test_random_measurements_appear_verbatim() -> None:
    generator = {index: os.urandom(48) for index in (0, 1, 2)}
    text = json.dumps(build_key_policy([generator], [pcrs(100)], [ADMIN], ROLE))
    for value in generator.values():
        assert value.hex() in text


def test_too_many_sets_exceed_the_kms_size_limit() -> None:
    mains = [pcrs(n) for n in range(0, 240, 3)]
    with pytest.raises(KMSPolicyDocumentError, match="at most 32768"):
        build_key_policy([pcrs(1)], mains, [ADMIN], ROLE)
    build_key_policy([pcrs(1)], mains[:8], [ADMIN], ROLE)
