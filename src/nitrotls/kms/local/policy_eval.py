"""Key-policy evaluation, the subset of IAM semantics that KMS key policies use here.

A policy is parsed and validated once (:func:`parse_policy`), then evaluated per request
(:meth:`KeyPolicy.evaluate`). The rules follow IAM: a request is allowed only when some statement
allows it and no statement denies it (explicit Deny wins; the default is deny). A statement
applies when its Principal, Action/NotAction, Resource/NotResource and every Condition match.

Conditions: every operator in a statement must hold, every key under an operator must hold, and a
key holds when the request value matches any of the listed values (for the negated operators:
matches none of them). Missing keys follow AWS: a positive operator over a missing key is false,
a negated one true, ``...IfExists`` is true, ``ForAllValues:`` over a missing or empty set is true,
``ForAnyValue:`` false, and ``Null: "true"`` holds exactly when the key is absent.

Anything this evaluator does not understand (another operator, NotPrincipal, a malformed
statement) is refused when the policy is stored, never ignored when it is evaluated: fail closed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from nitrotls.kms.local.errors import ServiceError

VERSIONS = ("2012-10-17", "2008-10-17")
MAX_POLICY_BYTES = 32768

# Operators: name → (match one request value against one policy value, negated?).
_Matcher = Callable[[str, str], bool]
_ACCOUNT_ID = re.compile(r"\d{12}")
_MATCH_MEMO = 1024  # remembered (principal, action, resource) matches per statement
_DECISION_MEMO = 4096  # remembered decisions per key policy


def _glob(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return _compiled(pattern, flags)


@lru_cache(maxsize=4096)
def _compiled(pattern: str, flags: int) -> re.Pattern[str]:
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(f"^{body}$", flags | re.DOTALL)


def _like(value: str, pattern: str) -> bool:
    return _glob(pattern).match(value) is not None


def _equals(value: str, expected: str) -> bool:
    return value == expected


def _equals_ignore_case(value: str, expected: str) -> bool:
    return value.casefold() == expected.casefold()


def _bool(value: str, expected: str) -> bool:
    return value.lower() == expected.lower()


_OPERATORS: dict[str, tuple[_Matcher, bool]] = {
    "stringequals": (_equals, False),
    "stringnotequals": (_equals, True),
    "stringequalsignorecase": (_equals_ignore_case, False),
    "stringnotequalsignorecase": (_equals_ignore_case, True),
    "stringlike": (_like, False),
    "stringnotlike": (_like, True),
    "arnequals": (_like, False),
    "arnlike": (_like, False),
    "arnnotequals": (_like, True),
    "arnnotlike": (_like, True),
    "bool": (_bool, False),
}


def malformed(message: str) -> ServiceError:
    return ServiceError("MalformedPolicyDocumentException", message)


@dataclass(frozen=True)
class RequestContext:
    """What a request looks like to the policy: who, what, on which key, with which values.

    ``values`` maps condition keys (any case) to one value, or to a tuple for multi-valued keys
    such as ``kms:EncryptionContextKeys``; an absent key or an empty tuple means "not present".
    """

    action: str
    principal: str
    resource: str
    values: Mapping[str, str | tuple[str, ...]]

    def __post_init__(self) -> None:
        lowered = {key.lower(): value for key, value in self.values.items()}
        object.__setattr__(self, "values", lowered)

    def lookup(self, key: str) -> tuple[str, ...] | None:
        """The request's values for ``key`` (already lower-case), or None when absent."""
        value = self.values.get(key)
        if value is None:
            return None
        found = (value,) if isinstance(value, str) else value
        return found or None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


@dataclass(frozen=True)
class Condition:
    """One (operator, key, values) triple, e.g. StringEqualsIgnoreCase PCR0 [hex]."""

    operator: str
    set_operator: str | None  # "forallvalues", "foranyvalue" or None
    if_exists: bool
    key: str
    values: tuple[str, ...]

    def holds(self, context: RequestContext) -> bool:
        present = context.lookup(self.key)
        if self.operator == "null":
            return (present is None) == (self.values[0].lower() == "true")
        if present is None:
            return self._when_missing()
        matcher, negated = _OPERATORS[self.operator]

        def one(value: str) -> bool:
            hit = any(matcher(value, expected) for expected in self.values)
            return not hit if negated else hit

        if self.set_operator == "forallvalues":
            return all(one(value) for value in present)
        if self.set_operator == "foranyvalue":
            return any(one(value) for value in present)
        if negated:
            return all(one(value) for value in present)
        return any(one(value) for value in present)

    def _when_missing(self) -> bool:
        if self.set_operator == "forallvalues":
            return True
        if self.if_exists:
            return True
        if self.set_operator == "foranyvalue":
            return False
        return _OPERATORS[self.operator][1]


@dataclass(frozen=True)
class Principal:
    """One Principal entry, pre-digested: ``*``, an account, a role, or an exact ARN."""

    kind: str  # "any", "account", "role" or "exact"
    account: str = ""
    name: str = ""  # the role name, for "role"
    arn: str = ""  # the entry itself, for "role" and "exact"

    @classmethod
    def of(cls, entry: str) -> Principal:
        if entry == "*":
            return cls("any")
        if _ACCOUNT_ID.fullmatch(entry):
            return cls("account", entry)
        parts = entry.split(":", 5)
        if len(parts) != 6:
            return cls("exact", arn=entry)
        if parts[5] == "root":
            return cls("account", parts[4])
        if parts[5].startswith("role/"):
            return cls("role", parts[4], parts[5].rsplit("/", 1)[-1], entry)
        return cls("exact", arn=entry)

    def matches(self, principal: str, caller: list[str]) -> bool:
        """``caller`` is ``principal.split(":", 5)``, split once per request."""
        if self.kind == "any":
            return True
        if self.kind == "exact" or principal == self.arn:
            return principal == self.arn
        if len(caller) != 6 or caller[4] != self.account:
            return False
        if self.kind == "account":
            return True
        # A role also matches its sessions: arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION.
        session = caller[5].split("/")
        return (
            caller[2] == "sts"
            and len(session) == 3
            and session[0] == "assumed-role"
            and session[1] == self.name
        )


@dataclass(frozen=True)
class Statement:
    sid: str
    allow: bool
    principals: tuple[str, ...]  # "*" for anyone
    actions: tuple[str, ...]
    actions_negated: bool
    resources: tuple[str, ...]
    resources_negated: bool
    conditions: tuple[Condition, ...]
    _principals: tuple[Principal, ...] = field(init=False, repr=False, compare=False)
    _actions: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _resources: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _matched: dict[tuple[str, str, str], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once when the policy is stored, not per request.
        object.__setattr__(self, "_principals", tuple(Principal.of(p) for p in self.principals))
        object.__setattr__(self, "_actions", tuple(_glob(a, re.IGNORECASE) for a in self.actions))
        object.__setattr__(self, "_resources", tuple(_glob(r) for r in self.resources))
        object.__setattr__(self, "_matched", {})

    def applies(self, context: RequestContext) -> bool:
        if not self._matches(context.principal, context.action, context.resource):
            return False
        return all(condition.holds(context) for condition in self.conditions)

    def _matches(self, principal: str, action: str, resource: str) -> bool:
        """Principal, action and resource: a pure function of this (immutable) statement and
        three strings, remembered per triple. Bounded: callers are configured credentials,
        actions the operations, resources the keys (the table is cleared past its limit)."""
        triple = (principal, action, resource)
        found = self._matched.get(triple)
        if found is None:
            found = (
                self._principal_matches(principal)
                and self._action_matches(action)
                and self._resource_matches(resource)
            )
            if len(self._matched) >= _MATCH_MEMO:
                self._matched.clear()
            self._matched[triple] = found
        return found

    def _principal_matches(self, principal: str) -> bool:
        caller = principal.split(":", 5)
        return any(entry.matches(principal, caller) for entry in self._principals)

    def _action_matches(self, action: str) -> bool:
        hit = any(pattern.match(action) for pattern in self._actions)
        return not hit if self.actions_negated else hit

    def _resource_matches(self, resource: str) -> bool:
        hit = any(pattern.match(resource) for pattern in self._resources)
        return not hit if self.resources_negated else hit


@dataclass(frozen=True)
class KeyPolicy:
    """A parsed key policy; ``text`` is the document exactly as the caller stored it."""

    text: str
    statements: tuple[Statement, ...]
    _decided: dict[tuple[object, ...], Decision] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def decide(
        self,
        action: str,
        resource: str,
        *,
        principal: str,
        account: str,
        encryption_context: Mapping[str, str] | None = None,
        pcrs: Mapping[int, bytes] | None = None,
    ) -> Decision:
        """:meth:`evaluate` for a KMS request's condition keys (:func:`context_values`).

        A decision is a pure function of this immutable policy and these inputs, so it is
        remembered per exact input (bounded: the table is cleared past its limit); a request
        from the same enclave image with the same context costs a dictionary lookup.
        """
        memo_key = (
            action,
            resource,
            principal,
            account,
            tuple(encryption_context.items()) if encryption_context is not None else None,
            tuple(pcrs.items()) if pcrs is not None else None,
        )
        decision = self._decided.get(memo_key)
        if decision is None:
            values = context_values(
                principal=principal,
                account=account,
                encryption_context=encryption_context,
                pcrs=pcrs,
            )
            decision = self.evaluate(RequestContext(action, principal, resource, values))
            if len(self._decided) >= _DECISION_MEMO:
                self._decided.clear()
            self._decided[memo_key] = decision
        return decision

    def evaluate(self, context: RequestContext) -> Decision:
        allowed_by: Statement | None = None
        for statement in self.statements:
            if not statement.applies(context):
                continue
            if not statement.allow:
                return Decision(
                    False,
                    f"explicit deny in the key policy (statement {statement.sid or '#'})",
                )
            allowed_by = allowed_by or statement
        if allowed_by is None:
            return Decision(False, "no statement in the key policy allows it")
        return Decision(True, f"allowed by key policy statement {allowed_by.sid or '#'}")


def parse_policy(text: str) -> KeyPolicy:
    """Parse and validate a key policy; raise MalformedPolicyDocumentException when unusable."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise malformed(f"The key policy is longer than {MAX_POLICY_BYTES} bytes.")
    try:
        document = json.loads(text)
    except ValueError as error:
        raise malformed(f"The key policy is not valid JSON: {error}.") from None
    if not isinstance(document, dict):
        raise malformed("The key policy must be a JSON object.")
    version = document.get("Version", "2008-10-17")
    if version not in VERSIONS:
        raise malformed(f"Policy Version must be one of {', '.join(VERSIONS)}, not {version!r}.")
    raw = document.get("Statement")
    items = [raw] if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise malformed("The key policy needs a Statement (an object or a non-empty list).")
    return KeyPolicy(
        text=text, statements=tuple(_statement(item, n) for n, item in enumerate(items))
    )


def _statement(item: Any, index: int) -> Statement:
    where = f"Statement {index}"
    if not isinstance(item, dict):
        raise malformed(f"{where} must be an object.")
    unknown = set(item) - {
        "Sid",
        "Effect",
        "Principal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    }
    if unknown:
        raise malformed(f"{where} has fields this server does not support: {sorted(unknown)}.")
    sid = item.get("Sid", "")
    if not isinstance(sid, str):
        raise malformed(f"{where}: Sid must be a string.")
    where = f"Statement {sid or index}"
    effect = item.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise malformed(f"{where}: Effect must be 'Allow' or 'Deny'.")
    actions, actions_negated = _exclusive(item, "Action", "NotAction", where)
    for action in actions:
        if action != "*" and not re.fullmatch(r"[A-Za-z0-9-]+:[A-Za-z0-9*?]+", action):
            raise malformed(f"{where}: action {action!r} is not 'service:Name' (wildcards * ?).")
    resources, resources_negated = _exclusive(item, "Resource", "NotResource", where)
    return Statement(
        sid=sid,
        allow=effect == "Allow",
        principals=_principals(item.get("Principal"), where),
        actions=actions,
        actions_negated=actions_negated,
        resources=resources,
        resources_negated=resources_negated,
        conditions=_conditions(item.get("Condition", {}), where),
    )


def _strings(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise malformed(f"{what} must be a string or a non-empty list of strings.")
    return tuple(items)


def _exclusive(
    item: dict[str, Any], name: str, negated: str, where: str
) -> tuple[tuple[str, ...], bool]:
    if (name in item) == (negated in item):
        raise malformed(f"{where} needs exactly one of {name} and {negated}.")
    if name in item:
        return _strings(item[name], f"{where}: {name}"), False
    return _strings(item[negated], f"{where}: {negated}"), True


def _principals(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        raise malformed(
            f"{where}: a key policy statement needs a Principal (NotPrincipal is not supported)."
        )
    if value == "*":
        return ("*",)
    if not isinstance(value, dict) or not value:
        raise malformed(f'{where}: Principal must be "*" or an object such as {{"AWS": ARN}}.')
    found: list[str] = []
    for kind, entries in value.items():
        if kind not in ("AWS", "Service", "Federated", "CanonicalUser"):
            raise malformed(f"{where}: unknown Principal type {kind!r}.")
        names = _strings(entries, f"{where}: Principal.{kind}")
        if kind == "AWS":
            for name in names:
                if name != "*" and not (
                    re.fullmatch(r"\d{12}", name)
                    or re.fullmatch(r"arn:[^:]+:(iam|sts)::\d{12}:.+", name)
                ):
                    raise malformed(f"{where}: {name!r} is not an AWS account or principal ARN.")
            found.extend(names)
        # Service, federated and canonical-user principals never call here: they match nobody.
    return tuple(found)


def _conditions(value: Any, where: str) -> tuple[Condition, ...]:
    if not isinstance(value, dict):
        raise malformed(f"{where}: Condition must be an object of operators.")
    found: list[Condition] = []
    for raw_operator, block in value.items():
        operator, set_operator, if_exists = _split_operator(str(raw_operator), where)
        if not isinstance(block, dict) or not block:
            raise malformed(f"{where}: {raw_operator} must map condition keys to values.")
        for key, raw_values in block.items():
            values = _condition_values(raw_values, f"{where}: {raw_operator}.{key}")
            if operator == "null" and (
                len(values) != 1 or values[0].lower() not in ("true", "false")
            ):
                raise malformed(f'{where}: Null takes exactly one value, "true" or "false".')
            found.append(Condition(operator, set_operator, if_exists, str(key).lower(), values))
    return tuple(found)


def _split_operator(name: str, where: str) -> tuple[str, str | None, bool]:
    lowered = name.lower()
    set_operator: str | None = None
    for prefix in ("forallvalues:", "foranyvalue:"):
        if lowered.startswith(prefix):
            set_operator = prefix[:-1]
            lowered = lowered[len(prefix) :]
    if_exists = lowered.endswith("ifexists")
    if if_exists:
        lowered = lowered[: -len("ifexists")]
    if lowered == "null" and (if_exists or set_operator):
        raise malformed(f"{where}: Null takes neither IfExists nor ForAllValues/ForAnyValue.")
    if lowered != "null" and lowered not in _OPERATORS:
        supported = ", ".join(["Null", *(_pretty(op) for op in _OPERATORS)])
        raise malformed(f"{where}: condition operator {name!r} is not supported (use {supported}).")
    return lowered, set_operator, if_exists


def _pretty(operator: str) -> str:
    return {
        "stringequals": "StringEquals",
        "stringnotequals": "StringNotEquals",
        "stringequalsignorecase": "StringEqualsIgnoreCase",
        "stringnotequalsignorecase": "StringNotEqualsIgnoreCase",
        "stringlike": "StringLike",
        "stringnotlike": "StringNotLike",
        "arnequals": "ArnEquals",
        "arnlike": "ArnLike",
        "arnnotequals": "ArnNotEquals",
        "arnnotlike": "ArnNotLike",
        "bool": "Bool",
    }[operator]


def _condition_values(raw: Any, what: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise malformed(f"{what} needs at least one value.")
    values: list[str] = []
    for item in items:
        if isinstance(item, bool):
            values.append("true" if item else "false")
        elif isinstance(item, str | int | float):
            values.append(str(item))
        else:
            raise malformed(f"{what}: values must be strings, numbers or booleans.")
    return tuple(values)


def context_values(
    *,
    principal: str,
    account: str,
    encryption_context: Mapping[str, str] | None = None,
    pcrs: Mapping[int, bytes] | None = None,
) -> dict[str, str | tuple[str, ...]]:
    """The condition keys of a KMS request, as this server provides them."""
    values: dict[str, str | tuple[str, ...]] = {
        "aws:PrincipalArn": principal,
        "aws:PrincipalAccount": account,
        "kms:CallerAccount": account,
    }
    context = encryption_context or {}
    for name, value in context.items():
        values[f"kms:EncryptionContext:{name}"] = value
    values["kms:EncryptionContextKeys"] = tuple(context)
    if pcrs is not None:
        for index, digest in pcrs.items():
            values[f"kms:RecipientAttestation:PCR{index}"] = digest.hex()
        if 0 in pcrs:
            values["kms:RecipientAttestation:ImageSha384"] = pcrs[0].hex()
    return values
