"""The generated policy, evaluated by the local KMS's policy engine: who may do what."""

from __future__ import annotations

import json

import pytest

from nitrotls.kms.local.policy_eval import RequestContext, parse_policy
from nitrotls.kms.policy import build_key_policy

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/nitrotls-enclave"
SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/nitrotls-enclave/i-0123456789abcdef0"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/KeyAdmin"
STRANGER = f"arn:aws:iam::{ACCOUNT}:role/Other"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/11111111-2222-3333-4444-555555555555"

GENERATOR = {index: bytes([0x10 + index]) * 48 for index in range(16)}
MAIN_V1 = {index: bytes([0xA0 + index]) * 48 for index in range(16)}
MAIN_V2 = {index: bytes([0xC0 + index]) * 48 for index in range(16)}
OTHER = {index: bytes([0xE0 + index]) * 48 for index in range(16)}
GENERATOR[8] = MAIN_V1[8] = MAIN_V2[8] = OTHER[8] = bytes(48)

POLICY = parse_policy(
    json.dumps(build_key_policy([GENERATOR], [MAIN_V1, MAIN_V2], [ADMIN], ROLE), indent=2)
)


BUNDLE_CTX = {"nitrotls:bundle": "00" * 16, "nitrotls:name": "app", "nitrotls:spki-sha384": "ab"}
ACCOUNT_CTX = {"nitrotls:acme-account": "cd" * 32, "nitrotls:spki-sha384": "ef"}


def attested(
    pcrs: dict[int, bytes] | None, upper: bool = False, context: dict[str, str] | None = None
) -> dict[str, str | tuple[str, ...]]:
    values: dict[str, str | tuple[str, ...]] = {}
    if pcrs is not None:
        pcr_values = {f"kms:RecipientAttestation:PCR{i}": v.hex() for i, v in pcrs.items()}
        pcr_values["kms:RecipientAttestation:ImageSha384"] = pcrs[0].hex()
        values.update({k: v.upper() for k, v in pcr_values.items()} if upper else pcr_values)
    context = BUNDLE_CTX if context is None else context
    values.update({f"kms:EncryptionContext:{k}": v for k, v in context.items()})
    values["kms:EncryptionContextKeys"] = tuple(context)
    return values


CASES = [
    ("generator gets a data key", SESSION, "GenerateDataKey", GENERATOR, True, "Generator"),
    ("generator role ARN itself", ROLE, "GenerateDataKey", GENERATOR, True, "Generator"),
    ("generator may not decrypt a bundle", SESSION, "Decrypt", GENERATOR, False, "no statement"),
    ("main v1 decrypts", SESSION, "Decrypt", MAIN_V1, True, "MainEnclaveDecrypt1"),
    ("main v2 decrypts", SESSION, "Decrypt", MAIN_V2, True, "MainEnclaveDecrypt2"),
    ("main may not generate", SESSION, "GenerateDataKey", MAIN_V1, False, "no statement"),
    ("another image", SESSION, "Decrypt", OTHER, False, "no statement"),
    ("no attestation", SESSION, "Decrypt", None, False, "WithoutAttestation"),
    ("no attestation, generate", SESSION, "GenerateDataKey", None, False, "WithoutAttestation"),
    ("admin cannot decrypt", ADMIN, "Decrypt", MAIN_V1, False, "AdministratorsNeverUse"),
    ("admin cannot encrypt", ADMIN, "Encrypt", None, False, "AdministratorsNeverUse"),
    ("admin describes", ADMIN, "DescribeKey", None, True, "AdministratorsManage"),
    ("admin puts policy", ADMIN, "PutKeyPolicy", None, True, "AdministratorsManage"),
    ("admin schedules deletion", ADMIN, "ScheduleKeyDeletion", None, True, "Administrators"),
    ("admin cannot grant", ADMIN, "CreateGrant", None, False, "DenyGrants"),
    ("enclave cannot grant", SESSION, "CreateGrant", MAIN_V1, False, "DenyGrants"),
    ("enclave cannot manage", SESSION, "PutKeyPolicy", MAIN_V1, False, "no statement"),
    ("stranger with main PCRs", STRANGER, "Decrypt", MAIN_V1, False, "no statement"),
]


@pytest.mark.parametrize(
    ("principal", "action", "pcrs", "allowed", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decisions(
    principal: str, action: str, pcrs: dict[int, bytes] | None, allowed: bool, reason: str
) -> None:
    context = RequestContext(f"kms:{action}", principal, KEY, attested(pcrs))
    decision = POLICY.evaluate(context)
    assert decision.allowed is allowed, decision.reason
    assert reason in decision.reason


def test_pcr_values_compare_ignoring_case() -> None:
    context = RequestContext("kms:Decrypt", SESSION, KEY, attested(MAIN_V1, upper=True))
    assert POLICY.evaluate(context).allowed


@pytest.mark.parametrize(
    ("pcrs", "context", "allowed"),
    [
        (GENERATOR, ACCOUNT_CTX, True),
        (GENERATOR, BUNDLE_CTX, False),
        (MAIN_V1, ACCOUNT_CTX, False),
        (MAIN_V1, {}, False),
        (GENERATOR, {}, False),
    ],
    ids=["generator-own-account", "generator-bundle", "main-account", "main-no-ctx", "gen-no-ctx"],
)
def test_decrypt_is_scoped_by_encryption_context(
    pcrs: dict[int, bytes], context: dict[str, str], allowed: bool
) -> None:
    """Main enclaves open bundles only; the generator reopens only its sealed ACME account."""
    request = RequestContext("kms:Decrypt", SESSION, KEY, attested(pcrs, context=context))
    assert POLICY.evaluate(request).allowed is allowed


def test_remembered_decisions_follow_every_input() -> None:
    """KeyPolicy.decide remembers decisions: interleaving requests that differ only in PCRs,
    principal, action or encryption context must never hand one request another's decision."""
    policy = parse_policy(POLICY.text)  # a fresh policy: an empty memo
    requests = [(principal, action, pcrs, BUNDLE_CTX, allowed) for _, principal, action, pcrs,
                allowed, _ in CASES]  # fmt: skip
    requests += [
        (SESSION, "Decrypt", GENERATOR, ACCOUNT_CTX, True),
        (SESSION, "Decrypt", GENERATOR, BUNDLE_CTX, False),
        (SESSION, "Decrypt", MAIN_V1, ACCOUNT_CTX, False),
        (SESSION, "Decrypt", MAIN_V1, {}, False),
    ]
    for order in (requests, requests[::-1], requests):
        for principal, action, pcrs, context, allowed in order:
            decision = policy.decide(
                f"kms:{action}",
                KEY,
                principal=principal,
                account=ACCOUNT,
                encryption_context=context,
                pcrs=pcrs,
            )
            assert decision.allowed is allowed, (principal, action, context, decision.reason)
