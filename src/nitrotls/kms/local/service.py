"""The request pipeline, independent of HTTP: authenticate, dispatch, audit, answer.

:meth:`KMSService.handle` takes what arrived on the wire and returns the status and JSON body to
send. Every request, refused or not, leaves one audit entry. The helpers used by the operations
(key resolution, policy checks, Recipient handling) live here so each operation reads as the AWS
documentation describes it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nitrotls.kms.cms import build_enveloped
from nitrotls.kms.local import fields
from nitrotls.kms.local.audit import AuditEvent, AuditLog
from nitrotls.kms.local.errors import (
    AuditError,
    LocalKMSError,
    ServiceError,
    access_denied,
    internal,
    invalid_state,
    not_found,
    validation,
)
from nitrotls.kms.local.recipient import RecipientChecker, VerifiedRecipient
from nitrotls.kms.local.sigv4 import Credential, WireRequest, authenticate
from nitrotls.kms.local.storage import DISABLED, PENDING_DELETION, KeyRecord, KeyStore
from nitrotls.secrets import wipe

log = logging.getLogger("nitrotls.kms.local")
TARGET_PREFIX = "TrentService."
CONTENT_TYPES = ("application/x-amz-json-1.1", "application/x-amz-json-1.0")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CLAIMED = re.compile(r"Credential=([^/,\s]+)/")
_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):(key/[^/]+|alias/.+)$")


@dataclass
class Call:
    """One request as the audit log sees it; filled in as the operation learns more."""

    operation: str
    caller: Credential | None = None
    key: str | None = None
    context: Mapping[str, str] | None = None
    pcrs: Mapping[int, bytes] | None = None
    reason: str = ""
    claimed: str = "no access key"

    @property
    def principal(self) -> str:
        return self._authenticated().principal

    @property
    def account(self) -> str:
        return self._authenticated().account

    def _authenticated(self) -> Credential:
        if self.caller is None:  # operations run only after authentication
            raise internal("an operation ran before its caller was authenticated")
        return self.caller


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class KMSService:
    """Everything a request needs: credentials, keys, the audit log, the Recipient checker."""

    def __init__(
        self,
        store: KeyStore,
        audit: AuditLog,
        recipients: RecipientChecker,
        credentials: Mapping[str, Credential],
    ) -> None:
        self.store = store
        self.audit = audit
        self.recipients = recipients
        self.credentials = dict(credentials)
        from nitrotls.kms.local.operations import OPERATIONS  # the table imports this module

        self._operations = OPERATIONS  # looked up here once, not imported per request

    def handle(self, request: WireRequest) -> Answer:
        """Answer one request. Nothing is answered that the audit log did not record: if the
        entry cannot be written, the answer (and any secret in it) is dropped for a 500."""
        target = request.headers.get("x-amz-target", "")
        operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
        call = Call(operation=operation or target[:64] or "(none)")
        answer, decision, reason = self._run(call, operation, target, request)
        if call.caller is None:  # the audit entry names the access key it claimed instead
            claimed = _CLAIMED.search(request.headers.get("authorization", ""))
            if claimed:
                call.claimed = f"access key {claimed[1][:128]}"
        try:
            self._record(call, decision, reason)
        except AuditError as error:
            log.error("refusing to answer %s: %s", call.operation, error)
            return _error_answer(internal("The audit log cannot be written; nothing was done."))
        return answer

    def _run(
        self, call: Call, operation: str, target: str, request: WireRequest
    ) -> tuple[Answer, str, str]:
        try:
            call.caller = authenticate(request, self.credentials)
            handler = self._operations.get(operation)
            if handler is None:
                raise ServiceError(
                    "UnknownOperationException",
                    f"X-Amz-Target {target!r} is not a KMS operation this server implements.",
                )
            result = handler(self, call, _json_body(request))
        except ServiceError as error:
            decision = "deny" if _is_denial(error) else "error"
            return _error_answer(error), decision, error.message
        except LocalKMSError as error:
            log.error("%s failed: %s", call.operation, error)
            return _error_answer(internal()), "error", str(error)
        except Exception:
            log.exception("%s failed unexpectedly", call.operation)
            return _error_answer(internal()), "error", "internal error"
        return Answer(200, json.dumps(result).encode()), "allow", call.reason or "ok"

    def _record(self, call: Call, decision: str, reason: str) -> None:
        caller = call.caller.principal if call.caller else f"unauthenticated ({call.claimed})"
        self.audit.record(
            AuditEvent(caller, call.operation, call.key, call.context, call.pcrs, decision, reason)
        )

    # -- helpers for operations -----------------------------------------------------------

    def resolve(self, call: Call, key_id: str, *, aliases: bool = True) -> KeyRecord:
        """A key named by id, key ARN, alias name or alias ARN (AWS's rules for each)."""
        record = self._lookup(call, key_id, aliases)
        if record is None:
            raise not_found(f"Invalid keyId {key_id!r}: no such key.")
        call.key = record.arn
        return record

    def _lookup(self, call: Call, key_id: str, aliases: bool) -> KeyRecord | None:
        if _UUID.match(key_id):
            record = self.store.get(key_id)
            return record if record is not None and record.account == call.account else None
        match = _KEY_ARN.match(key_id)
        account, name = (match[2], match[3]) if match else (call.account, key_id)
        if name.startswith("alias/"):
            if not aliases:
                raise validation(f"{key_id!r} is an alias; this operation needs a key id or ARN.")
            alias = self.store.alias(account, name)
            return self.store.get(alias.key_id) if alias is not None else None
        if match and name.startswith("key/"):
            record = self.store.get(name[4:])
            if record is not None and (record.account, record.region) == (account, match[1]):
                return record
        return None

    def authorize(
        self,
        call: Call,
        record: KeyRecord,
        action: str,
        *,
        context: Mapping[str, str] | None = None,
        recipient: VerifiedRecipient | None = None,
    ) -> None:
        """Raise AccessDeniedException unless the key policy allows ``action`` for the caller."""
        decision = record.policy.decide(
            action,
            record.arn,
            principal=call.principal,
            account=call.account,
            encryption_context=context,
            pcrs=recipient.pcrs if recipient else None,
        )
        call.reason = decision.reason
        if not decision.allowed:
            why = (
                "with an explicit deny in a resource-based policy"
                if "explicit deny" in decision.reason
                else f"because no resource-based policy allows the {action} action"
            )
            raise access_denied(
                f"User: {call.principal} is not authorized to perform: {action} on resource: "
                f"{record.arn} {why}"
            )

    def recipient(self, call: Call, body: Mapping[str, Any]) -> VerifiedRecipient | None:
        document = fields.recipient(body)
        if document is None:
            return None
        verified = self.recipients.check(document)
        call.pcrs = verified.audited_pcrs()
        return verified

    @staticmethod
    def require_usable(record: KeyRecord) -> None:
        if record.state == DISABLED:
            raise ServiceError("DisabledException", f"{record.arn} is disabled.")
        if record.state == PENDING_DELETION:
            raise invalid_state(f"{record.arn} is pending deletion.")

    @staticmethod
    def deliver(
        plaintext: bytearray, recipient: VerifiedRecipient | None, member: str = "Plaintext"
    ) -> dict[str, str]:
        """Plaintext for a bare call; for a Recipient, an envelope to its key and no plaintext.

        The buffer is wiped here, whatever happens.
        """
        try:
            if recipient is None:
                return {member: fields.encode_base64(plaintext)}
            envelope = build_enveloped(plaintext, recipient.public_key, spki=recipient.spki)
            return {"CiphertextForRecipient": fields.encode_base64(envelope)}
        finally:
            wipe(plaintext)


def _json_body(request: WireRequest) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in CONTENT_TYPES:
        raise validation(f"Content-Type must be {CONTENT_TYPES[0]}, not {content_type!r}.")
    if not request.body.strip():
        return {}
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise ServiceError(
            "SerializationException", "The request body is not valid JSON."
        ) from None
    if not isinstance(body, dict):
        raise ServiceError("SerializationException", "The request body must be a JSON object.")
    return body


def _is_denial(error: ServiceError) -> bool:
    return error.code in (
        "AccessDeniedException",
        "InvalidSignatureException",
        "UnrecognizedClientException",
        "MissingAuthenticationTokenException",
        "IncompleteSignatureException",
    )


def _error_answer(error: ServiceError) -> Answer:
    body = {"__type": error.code, "message": error.message}
    return Answer(error.status, json.dumps(body).encode())
