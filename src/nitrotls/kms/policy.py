"""The KMS key policy for a deployment: attested enclaves use the key, administrators manage it.

Only the statements written here grant anything: the account root is never a principal, so IAM
policies cannot add permissions on the key. The enclave role may ``kms:GenerateDataKey`` when
the attestation document's PCR0/1/2 (and PCR8 when signed images are used) equal a generator
set, and ``kms:Decrypt`` when they equal a main-enclave set (one statement per set, so several
images can be allowed during a rolling upgrade). Explicit Denys make the intent robust to later
edits: no Decrypt or GenerateDataKey for anyone without an attestation document (``Null``), no
crypto use by administrators, and no grants (a grant would bypass the PCR conditions).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nitrotls.kms.errors import KMSPolicyDocumentError

POLICY_VERSION = "2012-10-17"
MAX_POLICY_BYTES = 32768  # AWS KMS's limit for a key policy
PCR_BYTES = 48
REQUIRED_PCRS = (0, 1, 2)
ATTESTATION_KEY = "kms:RecipientAttestation:PCR{}"
ENCLAVE_OPERATIONS = ("kms:Decrypt", "kms:GenerateDataKey")

# Management only. kms:CreateAlias instead of kms:Create* (which would include kms:CreateGrant).
ADMIN_ACTIONS = (
    "kms:CreateAlias",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
)
ADMIN_DENIED_ACTIONS = (
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey*",
    "kms:ReEncrypt*",
)

# Encryption-context keys that say what a ciphertext protects (see bundle and generator docs).
BUNDLE_CONTEXT_KEY = "nitrotls:bundle"
ACME_ACCOUNT_CONTEXT_KEY = "nitrotls:acme-account"

_ARN = re.compile(
    r"^arn:aws(?:-cn|-us-gov|-iso|-iso-[a-z])?:iam::(?P<account>\d{12}):"
    r"(?P<kind>role|user|root)(?:/[\w+=,.@/-]+)?$"
)


def build_key_policy(
    generator_pcrs: Sequence[Mapping[int, bytes]],
    main_pcrs: Sequence[Mapping[int, bytes]],
    admin_arns: Iterable[str],
    enclave_role_arn: str,
    account_id: str | None = None,
    include_pcr8: bool | None = None,
    *,
    allow_debug: bool = False,
) -> dict[str, Any]:
    """The key-policy document (a JSON-ready dict) for one deployment.

    ``include_pcr8``: None includes PCR8 for every set that carries a non-zero PCR8 (a signed
    image); True requires it in every set; False never conditions on it.
    ``account_id``, when given, must be the enclave role's account and is also required of the
    caller (``kms:CallerAccount``).
    """
    admins = _admins(admin_arns, enclave_role_arn)
    role_account = _account(enclave_role_arn, "--enclave-role")
    if account_id is not None and account_id != role_account:
        raise KMSPolicyDocumentError(
            f"the enclave role {enclave_role_arn} is in account {role_account}, not {account_id}"
        )
    generators = _pcr_sets(generator_pcrs, "generator", include_pcr8, allow_debug)
    mains = _pcr_sets(main_pcrs, "main", include_pcr8, allow_debug)
    statements = [_admin_allow(admins), _admin_deny(admins)]
    for n, pcrs in enumerate(generators, 1):
        statements.append(
            _enclave_allow(
                f"GeneratorGenerateDataKey{n}",
                "kms:GenerateDataKey",
                pcrs,
                enclave_role_arn,
                account_id,
            )
        )
        # The generator reopens only its own sealed ACME account key, never a bundle's key.
        statements.append(
            _enclave_allow(
                f"GeneratorDecryptAcmeAccount{n}",
                "kms:Decrypt",
                pcrs,
                enclave_role_arn,
                account_id,
                context_key=ACME_ACCOUNT_CONTEXT_KEY,
            )
        )
    statements += [
        _enclave_allow(
            f"MainEnclaveDecrypt{n}",
            "kms:Decrypt",
            pcrs,
            enclave_role_arn,
            account_id,
            context_key=BUNDLE_CONTEXT_KEY,
        )
        for n, pcrs in enumerate(mains, 1)
    ]
    statements += [_deny_unattested(), _deny_grants()]
    policy = {"Version": POLICY_VERSION, "Id": "nitrotls-key-policy", "Statement": statements}
    size = len(json.dumps(policy, indent=2).encode())
    if size > MAX_POLICY_BYTES:
        raise KMSPolicyDocumentError(
            f"the key policy would be {size} bytes; KMS accepts at most {MAX_POLICY_BYTES}: "
            "allow fewer PCR sets at a time"
        )
    return policy


def _admins(arns: Iterable[str], enclave_role_arn: str) -> list[str]:
    admins = list(dict.fromkeys(arns))
    if not admins:
        raise KMSPolicyDocumentError("name at least one administrator (--admin ARN)")
    for arn in admins:
        _account(arn, "--admin")
        if arn.endswith(":root"):
            raise KMSPolicyDocumentError(
                f"administrator {arn} is an account root: that would let IAM policies in the "
                "account grant use of the key, and the admin Deny would then block the enclave "
                "role too; name an IAM role or user instead"
            )
        if arn == enclave_role_arn:
            raise KMSPolicyDocumentError(
                f"{arn} is both the enclave role and an administrator; administrators are denied "
                "Decrypt, so use separate roles"
            )
    return admins


def _account(arn: str, flag: str) -> str:
    match = _ARN.match(arn)
    if match is None:
        raise KMSPolicyDocumentError(
            f"{flag} {arn!r} is not an IAM role or user ARN "
            "(expected arn:aws:iam::123456789012:role/NAME)"
        )
    if flag == "--enclave-role" and match["kind"] != "role":
        raise KMSPolicyDocumentError(f"--enclave-role {arn} must be an IAM role ARN")
    return match["account"]


def _pcr_sets(
    sets: Sequence[Mapping[int, bytes]], role: str, include_pcr8: bool | None, debug: bool
) -> list[dict[int, str]]:
    if not sets:
        raise KMSPolicyDocumentError(f"give at least one {role} PCR set")
    chosen: list[dict[int, str]] = []
    for number, pcrs in enumerate(sets, 1):
        where = f"{role} PCR set {number}"
        picked = {index: _pcr_hex(pcrs, index, where) for index in REQUIRED_PCRS}
        if not debug and all(set(value) == {"0"} for value in picked.values()):
            raise KMSPolicyDocumentError(
                f"{where} has PCR0, PCR1 and PCR2 all zero: that is what every debug-mode "
                "enclave presents, so the policy would release the key to any debug enclave"
            )
        if _wants_pcr8(pcrs, include_pcr8, where):
            picked[8] = _pcr_hex(pcrs, 8, where)
        if picked not in chosen:
            chosen.append(picked)
    return chosen


def _wants_pcr8(pcrs: Mapping[int, bytes], include: bool | None, where: str) -> bool:
    if include is False:
        return False
    if include is True:
        if 8 not in pcrs:
            raise KMSPolicyDocumentError(f"{where} has no PCR8 but PCR8 was required")
        return True
    return any(pcrs.get(8, b""))


def _pcr_hex(pcrs: Mapping[int, bytes], index: int, where: str) -> str:
    if index not in pcrs:
        raise KMSPolicyDocumentError(f"{where} has no PCR{index}")
    value = bytes(pcrs[index])
    if len(value) != PCR_BYTES:
        raise KMSPolicyDocumentError(
            f"{where}: PCR{index} is {len(value)} bytes; Nitro PCRs are {PCR_BYTES} (SHA-384)"
        )
    return value.hex()


def _admin_allow(admins: list[str]) -> dict[str, Any]:
    return {
        "Sid": "AdministratorsManageTheKey",
        "Effect": "Allow",
        "Principal": {"AWS": admins},
        "Action": list(ADMIN_ACTIONS),
        "Resource": "*",
    }


def _admin_deny(admins: list[str]) -> dict[str, Any]:
    return {
        "Sid": "AdministratorsNeverUseTheKey",
        "Effect": "Deny",
        "Principal": {"AWS": admins},
        "Action": list(ADMIN_DENIED_ACTIONS),
        "Resource": "*",
    }


def _enclave_allow(
    sid: str,
    action: str,
    pcrs: dict[int, str],
    role: str,
    account_id: str | None,
    *,
    context_key: str | None = None,
) -> dict[str, Any]:
    """Allow ``action`` to the role when its attestation carries ``pcrs`` (and, when given, only
    for ciphertexts whose encryption context holds ``context_key``)."""
    condition: dict[str, dict[str, str]] = {
        "StringEqualsIgnoreCase": {
            ATTESTATION_KEY.format(index): value for index, value in sorted(pcrs.items())
        }
    }
    if context_key is not None:
        condition["Null"] = {f"kms:EncryptionContext:{context_key}": "false"}
    if account_id is not None:
        condition["StringEquals"] = {"kms:CallerAccount": account_id}
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"AWS": role},
        "Action": action,
        "Resource": "*",
        "Condition": condition,
    }


def _deny_unattested() -> dict[str, Any]:
    return {
        "Sid": "DenyKeyReleaseWithoutAttestation",
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": list(ENCLAVE_OPERATIONS),
        "Resource": "*",
        "Condition": {"Null": {ATTESTATION_KEY.format(0): "true"}},
    }


def _deny_grants() -> dict[str, Any]:
    return {
        "Sid": "DenyGrantsWhichBypassAttestation",
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": "kms:CreateGrant",
        "Resource": "*",
    }
