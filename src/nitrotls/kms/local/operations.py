"""The KMS operations this server implements, one function each, as AWS documents them.

Each takes the service, the call (for the audit entry) and the decoded JSON body, and returns
the JSON answer. Order inside an operation: read and validate input, find the key, verify a
Recipient, evaluate the key policy, check the key state, then do the work.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nitrotls.kms.local import blob, fields
from nitrotls.kms.local.errors import (
    ServiceError,
    invalid_ciphertext,
    invalid_state,
    not_found,
    validation,
)
from nitrotls.kms.local.policy_eval import (
    KeyPolicy,
    RequestContext,
    context_values,
    malformed,
    parse_policy,
)
from nitrotls.kms.local.storage import DISABLED, ENABLED, PENDING_DELETION, KeyRecord
from nitrotls.secrets import wipe

if TYPE_CHECKING:
    from nitrotls.kms.local.service import Call, KMSService

Body = dict[str, Any]
Handler = Callable[["KMSService", "Call", Body], Body]

SYMMETRIC = "SYMMETRIC_DEFAULT"
_ALIAS = re.compile(r"^alias/[a-zA-Z0-9/_-]+$")
_DATA_KEY_BYTES = {"AES_256": 32, "AES_128": 16}


def _unsupported(message: str) -> ServiceError:
    return ServiceError("UnsupportedOperationException", message)


def _dry_run(body: Body) -> None:
    if fields.flag(body, "DryRun"):
        raise ServiceError(
            "DryRunOperationException",
            "The request would have succeeded, but the DryRun option is set.",
            status=412,
        )


def _metadata(record: KeyRecord) -> Body:
    meta: Body = {
        "AWSAccountId": record.account,
        "KeyId": record.key_id,
        "Arn": record.arn,
        "CreationDate": record.created,
        "Enabled": record.state == ENABLED,
        "Description": record.description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": record.state,
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": SYMMETRIC,
        "KeySpec": SYMMETRIC,
        "EncryptionAlgorithms": [SYMMETRIC],
        "MultiRegion": False,
    }
    if record.state == PENDING_DELETION:
        meta["DeletionDate"] = record.deletion_date
        meta["PendingDeletionWindowInDays"] = record.pending_days
    return meta


def default_policy(account: str) -> str:
    """AWS's default key policy: the account (here: any principal of it) may do everything."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        },
        indent=2,
    )


def _new_policy(call: Call, body: Body, text: str, key_arn: str) -> KeyPolicy:
    """Parse a policy and apply AWS's lockout safety check unless the caller bypasses it."""
    policy = parse_policy(text)
    if fields.flag(body, "BypassPolicyLockoutSafetyCheck"):
        return policy
    values = context_values(principal=call.principal, account=call.account)
    context = RequestContext("kms:PutKeyPolicy", call.principal, key_arn, values)
    if not policy.evaluate(context).allowed:
        raise malformed(
            "The new key policy would lock you out: it does not allow "
            f"{call.principal} kms:PutKeyPolicy. Add a statement that allows it, or pass "
            "BypassPolicyLockoutSafetyCheck."
        )
    return policy


def _limit(body: Body) -> int:
    return fields.integer(body, "Limit", 1, 1000) or 100


def _page(body: Body, items: list[Body], member: str) -> Body:
    limit = _limit(body)
    marker = fields.text(body, "Marker", max_len=1024)
    start = 0
    if marker is not None:
        if not marker.isdigit() or int(marker) > len(items):
            raise ServiceError("InvalidMarkerException", "The Marker is not one this server gave.")
        start = int(marker)
    page = items[start : start + limit]
    answer: Body = {member: page, "Truncated": start + limit < len(items)}
    if answer["Truncated"]:
        answer["NextMarker"] = str(start + limit)
    return answer


# -- key management ---------------------------------------------------------------------------


def create_key(service: KMSService, call: Call, body: Body) -> Body:
    description = fields.text(body, "Description", min_len=0, max_len=8192) or ""
    spec = body.get("KeySpec", body.get("CustomerMasterKeySpec", SYMMETRIC))
    if spec != SYMMETRIC or body.get("KeyUsage", "ENCRYPT_DECRYPT") != "ENCRYPT_DECRYPT":
        raise _unsupported("This local KMS makes only SYMMETRIC_DEFAULT ENCRYPT_DECRYPT keys.")
    if body.get("Origin", "AWS_KMS") != "AWS_KMS" or fields.flag(body, "MultiRegion"):
        raise _unsupported("This local KMS makes only single-region keys with origin AWS_KMS.")
    if body.get("CustomKeyStoreId") or body.get("XksKeyId"):
        raise _unsupported("This local KMS has no custom key stores.")
    text = fields.text(body, "Policy", max_len=32768) or default_policy(call.account)
    policy = _new_policy(call, body, text, "*")
    record = service.store.create_key(call.account, description, policy)
    call.key = record.arn
    call.reason = "any authenticated caller may create keys"
    return {"KeyMetadata": _metadata(record)}


def describe_key(service: KMSService, call: Call, body: Body) -> Body:
    record = service.resolve(call, fields.required_text(body, "KeyId"))
    service.authorize(call, record, "kms:DescribeKey")
    return {"KeyMetadata": _metadata(record)}


def list_keys(service: KMSService, call: Call, body: Body) -> Body:
    keys = [{"KeyId": r.key_id, "KeyArn": r.arn} for r in service.store.keys(call.account)]
    call.reason = "any authenticated caller may list its account's keys"
    return _page(body, keys, "Keys")


def create_alias(service: KMSService, call: Call, body: Body) -> Body:
    name = fields.required_text(body, "AliasName", max_len=256)
    if name.startswith("alias/aws/"):
        raise ServiceError(
            "InvalidAliasNameException",
            "Alias names beginning alias/aws/ are reserved for AWS managed keys.",
        )
    if not _ALIAS.match(name):
        raise validation(f"Alias name {name!r} must match alias/[a-zA-Z0-9/_-]+.")
    record = service.resolve(call, fields.required_text(body, "TargetKeyId"), aliases=False)
    service.authorize(call, record, "kms:CreateAlias")
    if record.state == PENDING_DELETION:
        raise invalid_state(f"{record.arn} is pending deletion.")
    if record.account != call.account:
        raise validation("An alias must be in the same account as the key it names.")
    if service.store.create_alias(call.account, name, record.key_id) is None:
        raise ServiceError("AlreadyExistsException", f"An alias with the name {name} exists.")
    return {}


def list_aliases(service: KMSService, call: Call, body: Body) -> Body:
    key_id = fields.text(body, "KeyId")
    target = service.resolve(call, key_id).key_id if key_id is not None else None
    aliases = [
        {
            "AliasName": a.name,
            "AliasArn": a.arn,
            "TargetKeyId": a.key_id,
            "CreationDate": a.created,
            "LastUpdatedDate": a.created,
        }
        for a in service.store.aliases(call.account, target)
    ]
    call.reason = "any authenticated caller may list its account's aliases"
    return _page(body, aliases, "Aliases")


def _policy_name(body: Body) -> None:
    name = fields.text(body, "PolicyName", max_len=128)
    if name not in (None, "default"):
        raise not_found(f"No such policy {name!r}: a key has one policy, named 'default'.")


def get_key_policy(service: KMSService, call: Call, body: Body) -> Body:
    record = service.resolve(call, fields.required_text(body, "KeyId"), aliases=False)
    _policy_name(body)
    service.authorize(call, record, "kms:GetKeyPolicy")
    return {"Policy": record.policy.text, "PolicyName": "default"}


def put_key_policy(service: KMSService, call: Call, body: Body) -> Body:
    key_id = fields.required_text(body, "KeyId")
    _policy_name(body)
    text = fields.required_text(body, "Policy", max_len=32768)
    record = service.resolve(call, key_id, aliases=False)
    service.authorize(call, record, "kms:PutKeyPolicy")
    service.store.set_policy(record, _new_policy(call, body, text, record.arn))
    return {}


def enable_key(service: KMSService, call: Call, body: Body) -> Body:
    return _set_state(service, call, body, "kms:EnableKey", ENABLED)


def disable_key(service: KMSService, call: Call, body: Body) -> Body:
    return _set_state(service, call, body, "kms:DisableKey", DISABLED)


def _set_state(service: KMSService, call: Call, body: Body, action: str, state: str) -> Body:
    record = service.resolve(call, fields.required_text(body, "KeyId"), aliases=False)
    service.authorize(call, record, action)
    if record.state == PENDING_DELETION:
        raise invalid_state(f"{record.arn} is pending deletion; cancel the deletion first.")
    service.store.set_state(record, state)
    return {}


def schedule_key_deletion(service: KMSService, call: Call, body: Body) -> Body:
    key_id = fields.required_text(body, "KeyId")
    days = fields.integer(body, "PendingWindowInDays", 7, 30) or 30
    record = service.resolve(call, key_id, aliases=False)
    service.authorize(call, record, "kms:ScheduleKeyDeletion")
    if record.state == PENDING_DELETION:
        raise invalid_state(f"{record.arn} is already pending deletion.")
    updated = service.store.schedule_deletion(record, days)
    return {
        "KeyId": updated.arn,
        "DeletionDate": updated.deletion_date,
        "KeyState": PENDING_DELETION,
        "PendingWindowInDays": days,
    }


def cancel_key_deletion(service: KMSService, call: Call, body: Body) -> Body:
    record = service.resolve(call, fields.required_text(body, "KeyId"), aliases=False)
    service.authorize(call, record, "kms:CancelKeyDeletion")
    if record.state != PENDING_DELETION:
        raise invalid_state(f"{record.arn} is not pending deletion.")
    service.store.set_state(record, DISABLED)  # as AWS: a rescued key comes back disabled
    return {"KeyId": record.arn}


# -- cryptographic operations -----------------------------------------------------------------


def _algorithm(body: Body) -> None:
    fields.choice(
        body,
        "EncryptionAlgorithm",
        (SYMMETRIC, "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"),
        SYMMETRIC,
    )
    if body.get("EncryptionAlgorithm", SYMMETRIC) != SYMMETRIC:
        raise ServiceError(
            "InvalidKeyUsageException", "Symmetric keys support only SYMMETRIC_DEFAULT."
        )


def encrypt(service: KMSService, call: Call, body: Body) -> Body:
    key_id = fields.required_text(body, "KeyId")
    plaintext = fields.required_blob(body, "Plaintext", max_len=4096)
    context = call.context = fields.encryption_context(body)
    _algorithm(body)
    record = service.resolve(call, key_id)
    service.authorize(call, record, "kms:Encrypt", context=context)
    service.require_usable(record)
    _dry_run(body)
    sealed = blob.seal(service.store.cipher(record), record.key_id, context, plaintext)
    return {
        "CiphertextBlob": fields.encode_base64(sealed),
        "KeyId": record.arn,
        "EncryptionAlgorithm": SYMMETRIC,
    }


def decrypt(service: KMSService, call: Call, body: Body) -> Body:
    data = fields.required_blob(body, "CiphertextBlob")
    context = call.context = fields.encryption_context(body)
    _algorithm(body)
    parsed = blob.parse(data)
    record = service.store.get(parsed.key_id)
    if record is None:
        raise invalid_ciphertext("The key this ciphertext names does not exist here.")
    named = fields.text(body, "KeyId")
    if named is not None and service.resolve(call, named).key_id != record.key_id:
        raise ServiceError(
            "IncorrectKeyException",
            "The key ID in the request does not identify the key that encrypted the ciphertext.",
        )
    call.key = record.arn
    recipient = service.recipient(call, body)
    service.authorize(call, record, "kms:Decrypt", context=context, recipient=recipient)
    service.require_usable(record)
    _dry_run(body)
    plaintext = blob.open_blob(service.store.cipher(record), parsed, context)
    answer: Body = {"KeyId": record.arn, "EncryptionAlgorithm": SYMMETRIC}
    answer.update(service.deliver(plaintext, recipient))
    return answer


def generate_data_key(service: KMSService, call: Call, body: Body) -> Body:
    key_id = fields.required_text(body, "KeyId")
    size = _data_key_size(body)
    context = call.context = fields.encryption_context(body)
    record = service.resolve(call, key_id)
    recipient = service.recipient(call, body)
    service.authorize(call, record, "kms:GenerateDataKey", context=context, recipient=recipient)
    service.require_usable(record)
    _dry_run(body)
    plaintext = bytearray(os.urandom(size))
    try:
        sealed = blob.seal(service.store.cipher(record), record.key_id, context, plaintext)
    except BaseException:
        wipe(plaintext)
        raise
    answer: Body = {"CiphertextBlob": fields.encode_base64(sealed), "KeyId": record.arn}
    answer.update(service.deliver(plaintext, recipient))
    return answer


def _data_key_size(body: Body) -> int:
    number = fields.integer(body, "NumberOfBytes", 1, 1024)
    spec = body.get("KeySpec")
    if (number is None) == (spec is None):
        raise validation("Specify either KeySpec or NumberOfBytes (exactly one of them).")
    if number is not None:
        return number
    return _DATA_KEY_BYTES[fields.choice(body, "KeySpec", tuple(_DATA_KEY_BYTES), "")]


def generate_random(service: KMSService, call: Call, body: Body) -> Body:
    if body.get("CustomKeyStoreId"):
        raise _unsupported("This local KMS has no custom key stores.")
    number = fields.integer(body, "NumberOfBytes", 1, 1024)
    if number is None:
        raise validation("NumberOfBytes is required (1 to 1024).")
    recipient = service.recipient(call, body)
    call.reason = "any authenticated caller may generate random bytes"
    return service.deliver(bytearray(os.urandom(number)), recipient)


OPERATIONS: dict[str, Handler] = {
    "CreateKey": create_key,
    "DescribeKey": describe_key,
    "ListKeys": list_keys,
    "CreateAlias": create_alias,
    "ListAliases": list_aliases,
    "GetKeyPolicy": get_key_policy,
    "PutKeyPolicy": put_key_policy,
    "EnableKey": enable_key,
    "DisableKey": disable_key,
    "ScheduleKeyDeletion": schedule_key_deletion,
    "CancelKeyDeletion": cancel_key_deletion,
    "Encrypt": encrypt,
    "Decrypt": decrypt,
    "GenerateDataKey": generate_data_key,
    "GenerateRandom": generate_random,
}
