"""Key-policy evaluation: a table of requests against policies, and the validation that refuses
what the evaluator does not understand."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from nitrotls.kms.local.errors import ServiceError
from nitrotls.kms.local.policy_eval import RequestContext, context_values, parse_policy

ACCOUNT = "111122223333"
OTHER = "444455556666"
ENCLAVE = f"arn:aws:iam::{ACCOUNT}:role/enclave"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/admin"
STRANGER = f"arn:aws:iam::{OTHER}:role/enclave"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
PCR0 = bytes.fromhex("ab" * 48)
PCR1 = bytes.fromhex("cd" * 48)
OTHER_PCR = bytes.fromhex("ef" * 48)


def stmt(
    effect: str = "Allow",
    action: Any = "kms:Decrypt",
    principal: Any = None,
    condition: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "Effect": effect,
        "Principal": {"AWS": ENCLAVE} if principal is None else principal,
        "Resource": "*",
        **extra,
    }
    if action is not None:
        item["Action"] = action
    if condition is not None:
        item["Condition"] = condition
    return item


@dataclass(frozen=True)
class Case:
    name: str
    statements: list[dict[str, Any]]
    allowed: bool
    action: str = "kms:Decrypt"
    principal: str = ENCLAVE
    context: dict[str, str] = field(default_factory=dict)
    pcrs: dict[int, bytes] | None = None


def pcr_condition(operator: str, value: str | list[str]) -> dict[str, Any]:
    return {operator: {"kms:RecipientAttestation:PCR0": value}}


ATTESTED = {0: PCR0, 1: PCR1}

CASES = [
    # Basics: allow, default deny, explicit deny wins.
    Case("plain allow", [stmt()], True),
    Case("default deny: no statement", [stmt(action="kms:Encrypt")], False),
    Case("explicit deny wins over allow", [stmt(), stmt("Deny")], False),
    Case("explicit deny first still wins", [stmt("Deny"), stmt()], False),
    Case(
        "deny for another action does not block",
        [stmt(), stmt("Deny", action="kms:GenerateDataKey")],
        True,
    ),
    # Actions: case-insensitive, wildcards, NotAction.
    Case("action name is case-insensitive", [stmt(action="KMS:decrypt")], True),
    Case("kms:* matches everything", [stmt(action="kms:*")], True),
    Case("kms:Get* matches GetKeyPolicy", [stmt(action="kms:Get*")], True, "kms:GetKeyPolicy"),
    Case("kms:Get* does not match Decrypt", [stmt(action="kms:Get*")], False),
    Case(
        "kms:Generate?ataKey wildcard ?",
        [stmt(action="kms:Generate?ataKey")],
        True,
        "kms:GenerateDataKey",
    ),
    Case("action list", [stmt(action=["kms:Encrypt", "kms:Decrypt"])], True),
    Case(
        "NotAction excludes the named action", [stmt(action=None, NotAction="kms:Decrypt")], False
    ),
    Case(
        "NotAction allows other actions",
        [stmt(action=None, NotAction="kms:Decrypt")],
        True,
        "kms:DescribeKey",
    ),
    # Principals.
    Case("principal * matches anyone", [stmt(principal="*")], True, principal=STRANGER),
    Case("AWS * matches anyone", [stmt(principal={"AWS": "*"})], True, principal=STRANGER),
    Case(
        "account root matches a role of that account",
        [stmt(principal={"AWS": f"arn:aws:iam::{ACCOUNT}:root"})],
        True,
    ),
    Case("bare account id matches like root", [stmt(principal={"AWS": ACCOUNT})], True),
    Case(
        "account root does not match another account",
        [stmt(principal={"AWS": f"arn:aws:iam::{ACCOUNT}:root"})],
        False,
        principal=STRANGER,
    ),
    Case("other role of same account does not match", [stmt()], False, principal=ADMIN),
    Case("principal list", [stmt(principal={"AWS": [ADMIN, ENCLAVE]})], True),
    Case(
        "role matches its assumed-role session",
        [stmt()],
        True,
        principal=f"arn:aws:sts::{ACCOUNT}:assumed-role/enclave/i-0123",
    ),
    Case(
        "service principal matches no caller",
        [stmt(principal={"Service": "ec2.amazonaws.com"})],
        False,
    ),
    # StringEquals / IgnoreCase / Not / Like over the attestation keys.
    Case(
        "StringEquals PCR0 matches",
        [stmt(condition=pcr_condition("StringEquals", PCR0.hex()))],
        True,
        pcrs=ATTESTED,
    ),
    Case(
        "StringEquals is case-sensitive",
        [stmt(condition=pcr_condition("StringEquals", PCR0.hex().upper()))],
        False,
        pcrs=ATTESTED,
    ),
    Case(
        "StringEqualsIgnoreCase accepts upper-case hex",
        [stmt(condition=pcr_condition("StringEqualsIgnoreCase", PCR0.hex().upper()))],
        True,
        pcrs=ATTESTED,
    ),
    Case(
        "StringEqualsIgnoreCase other image refused",
        [stmt(condition=pcr_condition("StringEqualsIgnoreCase", OTHER_PCR.hex()))],
        False,
        pcrs=ATTESTED,
    ),
    Case(
        "value list is an OR (rolling upgrade)",
        [stmt(condition=pcr_condition("StringEqualsIgnoreCase", [OTHER_PCR.hex(), PCR0.hex()]))],
        True,
        pcrs=ATTESTED,
    ),
    Case(
        "keys under one operator are ANDed",
        [
            stmt(
                condition={
                    "StringEqualsIgnoreCase": {
                        "kms:RecipientAttestation:PCR0": PCR0.hex(),
                        "kms:RecipientAttestation:PCR1": OTHER_PCR.hex(),
                    }
                }
            )
        ],
        False,
        pcrs=ATTESTED,
    ),
    Case(
        "ImageSha384 is PCR0",
        [stmt(condition={"StringEquals": {"kms:RecipientAttestation:ImageSha384": PCR0.hex()}})],
        True,
        pcrs=ATTESTED,
    ),
    Case(
        "condition key names are case-insensitive",
        [stmt(condition={"StringEquals": {"KMS:recipientattestation:pcr0": PCR0.hex()}})],
        True,
        pcrs=ATTESTED,
    ),
    Case(
        "StringNotEquals: different value holds",
        [stmt(condition=pcr_condition("StringNotEquals", OTHER_PCR.hex()))],
        True,
        pcrs=ATTESTED,
    ),
    Case(
        "StringNotEquals: same value fails",
        [stmt(condition=pcr_condition("StringNotEquals", PCR0.hex()))],
        False,
        pcrs=ATTESTED,
    ),
    Case(
        "StringNotEqualsIgnoreCase: same value other case fails",
        [stmt(condition=pcr_condition("StringNotEqualsIgnoreCase", PCR0.hex().upper()))],
        False,
        pcrs=ATTESTED,
    ),
    Case(
        "StringLike with * and ?",
        [stmt(condition=pcr_condition("StringLike", "ab?b*"))],
        True,
        pcrs=ATTESTED,
    ),
    Case(
        "StringLike no match",
        [stmt(condition=pcr_condition("StringLike", "cd*"))],
        False,
        pcrs=ATTESTED,
    ),
    # Missing condition keys under each operator (no Recipient → no attestation keys).
    Case(
        "missing key: StringEquals is false",
        [stmt(condition=pcr_condition("StringEquals", PCR0.hex()))],
        False,
    ),
    Case(
        "missing key: StringEqualsIgnoreCase is false",
        [stmt(condition=pcr_condition("StringEqualsIgnoreCase", PCR0.hex()))],
        False,
    ),
    Case(
        "missing key: StringLike is false",
        [stmt(condition=pcr_condition("StringLike", "*"))],
        False,
    ),
    Case(
        "missing key: StringNotEquals is true",
        [stmt(condition=pcr_condition("StringNotEquals", PCR0.hex()))],
        True,
    ),
    Case(
        "missing key: StringNotEqualsIgnoreCase is true",
        [stmt(condition=pcr_condition("StringNotEqualsIgnoreCase", PCR0.hex()))],
        True,
    ),
    Case(
        "missing key: StringNotLike is true",
        [stmt(condition=pcr_condition("StringNotLike", "ab*"))],
        True,
    ),
    Case(
        "missing key: StringEqualsIfExists is true",
        [stmt(condition=pcr_condition("StringEqualsIfExists", PCR0.hex()))],
        True,
    ),
    Case(
        "present key: StringEqualsIfExists still compares",
        [stmt(condition=pcr_condition("StringEqualsIfExists", OTHER_PCR.hex()))],
        False,
        pcrs=ATTESTED,
    ),
    Case(
        "missing key: Bool is false",
        [stmt(condition={"Bool": {"aws:SecureTransport": "true"}})],
        False,
    ),
    Case(
        "missing key: ForAnyValue is false",
        [stmt(condition={"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "a"}})],
        False,
    ),
    Case(
        "missing key: ForAllValues is true",
        [stmt(condition={"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": "a"}})],
        True,
    ),
    Case(
        "missing key: Null true holds",
        [stmt(condition={"Null": {"kms:RecipientAttestation:ImageSha384": "true"}})],
        True,
    ),
    Case(
        "present key: Null true fails",
        [stmt(condition={"Null": {"kms:RecipientAttestation:ImageSha384": "true"}})],
        False,
        pcrs=ATTESTED,
    ),
    Case(
        "present key: Null false holds",
        [stmt(condition={"Null": {"kms:RecipientAttestation:ImageSha384": "false"}})],
        True,
        pcrs=ATTESTED,
    ),
    # The deployment shape: allow attested, deny when attestation is absent.
    Case(
        "deny-without-attestation blocks a bare call",
        [
            stmt(principal={"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, action="kms:*"),
            stmt(
                "Deny", principal="*", condition={"Null": {"kms:RecipientAttestation:PCR0": "true"}}
            ),
        ],
        False,
    ),
    Case(
        "deny-without-attestation lets an attested call through",
        [
            stmt(principal={"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, action="kms:*"),
            stmt(
                "Deny", principal="*", condition={"Null": {"kms:RecipientAttestation:PCR0": "true"}}
            ),
        ],
        True,
        pcrs=ATTESTED,
    ),
    # Multi-valued keys: encryption context keys.
    Case(
        "ForAllValues: every key allowed",
        [stmt(condition={"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["a", "b"]}})],
        True,
        context={"a": "1", "b": "2"},
    ),
    Case(
        "ForAllValues: an extra key fails",
        [stmt(condition={"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["a"]}})],
        False,
        context={"a": "1", "b": "2"},
    ),
    Case(
        "ForAnyValue: one key suffices",
        [stmt(condition={"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": ["b", "z"]}})],
        True,
        context={"a": "1", "b": "2"},
    ),
    Case(
        "ForAnyValue: none matches",
        [stmt(condition={"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": ["z"]}})],
        False,
        context={"a": "1", "b": "2"},
    ),
    Case(
        "ForAllValues:StringLike with a wildcard",
        [stmt(condition={"ForAllValues:StringLike": {"kms:EncryptionContextKeys": "nitrotls:*"}})],
        True,
        context={"nitrotls:bundle": "x", "nitrotls:name": "y"},
    ),
    Case(
        "ForAnyValue:StringEqualsIgnoreCase on keys",
        [
            stmt(
                condition={
                    "ForAnyValue:StringEqualsIgnoreCase": {
                        "kms:EncryptionContextKeys": "NITROTLS:NAME"
                    }
                }
            )
        ],
        True,
        context={"nitrotls:name": "y"},
    ),
    Case(
        "ForAllValues:StringNotEquals: no key forbidden",
        [stmt(condition={"ForAllValues:StringNotEquals": {"kms:EncryptionContextKeys": "bad"}})],
        True,
        context={"a": "1"},
    ),
    Case(
        "ForAllValues:StringNotEquals: a forbidden key present",
        [stmt(condition={"ForAllValues:StringNotEquals": {"kms:EncryptionContextKeys": "bad"}})],
        False,
        context={"a": "1", "bad": "2"},
    ),
    # Encryption context values, caller account, principal ARN.
    Case(
        "EncryptionContext value matches",
        [stmt(condition={"StringEquals": {"kms:EncryptionContext:nitrotls:name": "www"}})],
        True,
        context={"nitrotls:name": "www"},
    ),
    Case(
        "EncryptionContext value differs",
        [stmt(condition={"StringEquals": {"kms:EncryptionContext:nitrotls:name": "www"}})],
        False,
        context={"nitrotls:name": "api"},
    ),
    Case(
        "kms:CallerAccount",
        [stmt(principal="*", condition={"StringEquals": {"kms:CallerAccount": ACCOUNT}})],
        True,
    ),
    Case(
        "kms:CallerAccount other account",
        [stmt(principal="*", condition={"StringEquals": {"kms:CallerAccount": ACCOUNT}})],
        False,
        principal=STRANGER,
    ),
    Case(
        "aws:PrincipalArn with ArnLike",
        [
            stmt(
                principal="*",
                condition={"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/enc*"}},
            )
        ],
        True,
    ),
    Case(
        "several operators are ANDed",
        [
            stmt(
                condition={
                    "StringEqualsIgnoreCase": {"kms:RecipientAttestation:PCR0": PCR0.hex()},
                    "StringEquals": {"kms:EncryptionContext:nitrotls:name": "www"},
                }
            )
        ],
        False,
        context={"nitrotls:name": "api"},
        pcrs=ATTESTED,
    ),
    Case(
        "Bool true compares case-insensitively",
        [stmt(condition={"Bool": {"kms:EncryptionContext:flag": True}})],
        True,
        context={"flag": "TRUE"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_policy_table(case: Case) -> None:
    policy = parse_policy(json.dumps({"Version": "2012-10-17", "Statement": case.statements}))
    values = context_values(
        principal=case.principal,
        account=case.principal.split(":")[4],
        encryption_context=case.context,
        pcrs=case.pcrs,
    )
    decision = policy.evaluate(RequestContext(case.action, case.principal, KEY, values))
    assert decision.allowed is case.allowed, decision.reason


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 30


def test_deny_reason_names_the_statement() -> None:
    policy = parse_policy(
        json.dumps({"Statement": [stmt(), {**stmt("Deny"), "Sid": "NoBareCalls"}]})
    )
    decision = policy.evaluate(RequestContext("kms:Decrypt", ENCLAVE, KEY, {}))
    assert not decision.allowed
    assert "explicit deny" in decision.reason and "NoBareCalls" in decision.reason


BAD_POLICIES: list[tuple[str, Any]] = [
    ("not json", "{"),
    ("not an object", "[]"),
    ("no statement", {"Version": "2012-10-17"}),
    ("bad version", {"Version": "2020-01-01", "Statement": [stmt()]}),
    ("bad effect", {"Statement": [stmt("Maybe")]}),
    ("no principal", {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}),
    ("NotPrincipal", {"Statement": [{**stmt(), "NotPrincipal": {"AWS": ADMIN}}]}),
    ("no action", {"Statement": [stmt(action=None)]}),
    ("both Action and NotAction", {"Statement": [stmt(NotAction="kms:Decrypt")]}),
    ("no resource", {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*"}]}),
    ("unknown operator", {"Statement": [stmt(condition={"NumericEquals": {"a": "1"}})]}),
    ("Null with bad value", {"Statement": [stmt(condition={"Null": {"a": "maybe"}})]}),
    ("Null IfExists", {"Statement": [stmt(condition={"NullIfExists": {"a": "true"}})]}),
    ("empty condition values", {"Statement": [stmt(condition={"StringEquals": {"a": []}})]}),
    ("bad principal", {"Statement": [stmt(principal={"AWS": "bob"})]}),
    ("bad action", {"Statement": [stmt(action="Decrypt")]}),
]


@pytest.mark.parametrize("document", [d for _, d in BAD_POLICIES], ids=[n for n, _ in BAD_POLICIES])
def test_malformed_policies_are_refused(document: Any) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(ServiceError) as caught:
        parse_policy(text)
    assert caught.value.code == "MalformedPolicyDocumentException"
