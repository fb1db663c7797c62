"""``nitrotls.toml``: one file configuring the roles, one frozen dataclass per section.

Each section (``[generator]``, ``[kms]``, ``[store]``, ``[ca]``, and the server's) is independent:
a frozen dataclass whose fields, with their types and defaults, *are* the schema. The loader
refuses unknown sections and keys (a typo must not silently fall back to a default), checks each
value's type, and runs the section's own ``validate``. Command-line options override fields with
:func:`override`. Keys may be written ``snake_case`` or ``kebab-case``.

Adding a section: define a frozen dataclass deriving from :class:`Section`. Sections of the
building blocks live here, in :data:`SECTIONS` and as fields of :class:`Config`; a role's section
(``[server]``) lives in the role's package, is named in :data:`ROLE_SECTIONS` and imported only
when a file uses it, and is read as ``config.server`` all the same.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from nitrotls.errors import NitroTLSError

CONFIG_ENV = "NITROTLS_CONFIG"
MAX_CONFIG_BYTES = 1024 * 1024
KEY_TYPES = ("p256", "p384", "rsa2048", "rsa3072")
CHALLENGES = ("http-01", "dns-01")


class ConfigError(NitroTLSError):
    """``nitrotls.toml`` (or a command-line override) is not usable."""

    exit_code = 2


@dataclass(frozen=True)
class Section:
    """Base of every section: typed parsing from a TOML table, and a validation hook."""

    name: ClassVar[str] = ""

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, base: Path | None = None) -> Self:
        """Build the section from its TOML table; relative paths resolve against ``base``."""
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for raw_key, raw_value in table.items():
            key = raw_key.replace("-", "_")
            if key not in known:
                allowed = ", ".join(sorted(known))
                raise ConfigError(f"[{cls.name}] has unknown key {raw_key!r} (known: {allowed})")
            if key in values:  # TOML sees two keys where the section has one field
                first = next(k for k in table if k != raw_key and k.replace("-", "_") == key)
                raise ConfigError(
                    f"[{cls.name}] gives {key} twice, as {first!r} and {raw_key!r} (dash and "
                    "underscore spellings of one key): keep one"
                )
            values[key] = _coerce(f"[{cls.name}] {raw_key}", raw_value, hints[key], base)
        section = cls(**values)
        section.validate()
        return section

    def validate(self) -> None:
        """Check cross-field rules; raise :class:`ConfigError` with an actionable message."""

    def to_table(self) -> dict[str, Any]:
        """The section as plain values (paths as strings), for ``--json`` and docs."""
        out: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, tuple):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            elif isinstance(value, Path):
                value = str(value)
            out[item.name] = value
        return out


@dataclass(frozen=True)
class GeneratorSection(Section):
    """What to issue and when to renew."""

    name: ClassVar[str] = "generator"

    bundle: str | None = None  # bundle name; default: the first domain
    domains: tuple[str, ...] = ()
    key_type: str = "p256"
    main_pcrs: tuple[Path, ...] = ()  # main-enclave PCR files, logged at start (for the record)
    renew_fraction: float = 2 / 3  # renew once this share of the lifetime has passed
    renew_jitter: float = 0.05  # plus up to this share of the lifetime, fixed per bundle
    lease_ttl: float = 300.0  # seconds the store lease lasts without renewal
    lease_wait: float | None = None  # seconds to wait for a held lease (default: lease_ttl + 5)
    retry_initial: float = 1.0  # first back-off after a CA/KMS/store failure, seconds
    retry_max: float = 300.0  # longest back-off, seconds
    retry_attempts: int = 5  # attempts per issuance with --once (the daemon never gives up)
    check_interval: float = 3600.0  # longest daemon sleep between looks at the store
    log_json: bool = False

    def validate(self) -> None:
        if self.key_type not in KEY_TYPES:
            raise ConfigError(
                f"[generator] key_type must be one of {', '.join(KEY_TYPES)}, "
                f"found {self.key_type!r}"
            )
        if not 0 < self.renew_fraction < 1:
            raise ConfigError("[generator] renew_fraction must be between 0 and 1 (e.g. 0.6667)")
        if not 0 <= self.renew_jitter < 1 - self.renew_fraction:
            raise ConfigError(
                "[generator] renew_jitter must be at least 0 and leave room before expiry "
                "(renew_fraction + renew_jitter < 1)"
            )
        for label, value in (
            ("lease_ttl", self.lease_ttl),
            ("retry_initial", self.retry_initial),
            ("retry_max", self.retry_max),
            ("check_interval", self.check_interval),
        ):
            if value <= 0:
                raise ConfigError(f"[generator] {label} must be positive, found {value}")
        if self.lease_wait is not None and self.lease_wait < 0:
            raise ConfigError("[generator] lease_wait must not be negative")
        if self.retry_attempts < 1:
            raise ConfigError("[generator] retry_attempts must be at least 1")

    @property
    def bundle_name(self) -> str | None:
        """The bundle name: explicit, else the first domain (a wildcard's '*.' dropped)."""
        if self.bundle:
            return self.bundle
        if self.domains:
            return self.domains[0].removeprefix("*.")
        return None


@dataclass(frozen=True)
class KMSSection(Section):
    """Which KMS and key seal the data keys (credentials: boto3's usual chain)."""

    name: ClassVar[str] = "kms"

    endpoint: str | None = None  # None: AWS's regional endpoint; else e.g. http://127.0.0.1:4000
    region: str = "us-east-1"
    key_id: str | None = None  # key id, ARN or alias/NAME


@dataclass(frozen=True)
class StoreSection(Section):
    """Where bundles live: ``dir:PATH``, a bare path, or ``s3://bucket/prefix?...``."""

    name: ClassVar[str] = "store"

    spec: str | None = None  # None: the directory store under the data directory


@dataclass(frozen=True)
class CASection(Section):
    """Which CA signs, and how ACME proves control of the names."""

    name: ClassVar[str] = "ca"

    server: str = "local"  # "local" or "acme:DIRECTORY_URL"
    ca_bundle: Path | None = None  # PEM roots for the ACME server's own TLS
    contact: tuple[str, ...] = ()  # e.g. ["mailto:ops@example.com"]
    eab_kid: str | None = None
    eab_hmac: str | None = None  # base64url; prefer $NITROTLS_EAB_HMAC to keep it out of files
    challenge: str = "http-01"
    dns_hook: str | None = None  # command called as CMD add|remove RECORD VALUE
    dns_propagation_delay: float = 0.0
    local_validity_days: int = 90
    timeout: float = 90.0  # longest wait for one ACME order

    def validate(self) -> None:
        if self.server != "local" and not self.server.startswith("acme:"):
            raise ConfigError(
                f"[ca] server must be 'local' or 'acme:DIRECTORY_URL', found {self.server!r}"
            )
        if self.server.startswith("acme:") and not self.directory_url.startswith(
            ("https://", "http://")
        ):
            raise ConfigError(f"[ca] server {self.server!r}: the directory must be an http(s) URL")
        if self.challenge not in CHALLENGES:
            raise ConfigError(
                f"[ca] challenge must be one of {', '.join(CHALLENGES)}, found {self.challenge!r}"
            )
        if self.challenge == "dns-01" and self.server != "local" and not self.dns_hook:
            raise ConfigError("[ca] challenge dns-01 needs dns_hook (a command)")
        if self.eab_hmac is not None and self.eab_kid is None:
            raise ConfigError("[ca] eab_hmac needs eab_kid (the key id the CA gave with it)")
        if self.local_validity_days < 1 or self.timeout <= 0:
            raise ConfigError("[ca] local_validity_days and timeout must be positive")

    @property
    def is_local(self) -> bool:
        return self.server == "local"

    @property
    def directory_url(self) -> str:
        return self.server.removeprefix("acme:")


@dataclass(frozen=True)
class Config:
    """The whole file: every section, each defaulting to its dataclass defaults."""

    generator: GeneratorSection = field(default_factory=GeneratorSection)
    kms: KMSSection = field(default_factory=KMSSection)
    store: StoreSection = field(default_factory=StoreSection)
    ca: CASection = field(default_factory=CASection)
    path: Path | None = None
    roles: Mapping[str, Section] = field(default_factory=dict)  # e.g. "server" (ROLE_SECTIONS)

    def __getattr__(self, name: str) -> Section:
        """``config.server`` and other role sections present in the file."""
        roles: Mapping[str, Section] = self.__dict__.get("roles") or {}
        if name in roles:
            return roles[name]
        raise AttributeError(f"no [{name}] section in this configuration")


SECTIONS: dict[str, type[Section]] = {
    GeneratorSection.name: GeneratorSection,
    KMSSection.name: KMSSection,
    StoreSection.name: StoreSection,
    CASection.name: CASection,
}

# Sections owned by roles (a building block never imports a role, so these load on demand).
ROLE_SECTIONS: dict[str, tuple[str, str]] = {
    "server": ("nitrotls.server.config", "ServerSection"),
}


def section_class(name: str) -> type[Section] | None:
    """The dataclass of section ``name``, importing a role's module when needed."""
    if name in SECTIONS:
        return SECTIONS[name]
    if name not in ROLE_SECTIONS:
        return None
    module, attribute = ROLE_SECTIONS[name]
    cls = getattr(importlib.import_module(module), attribute)
    if not (isinstance(cls, type) and issubclass(cls, Section)):
        raise ConfigError(f"[{name}] is not a configuration section ({module}.{attribute})")
    return cls


def load(path: Path | str | None = None) -> Config:
    """Read ``path`` (else ``$NITROTLS_CONFIG``); with neither, every section's defaults."""
    chosen = path if path is not None else os.environ.get(CONFIG_ENV) or None
    if chosen is None:
        return Config()
    file = Path(chosen).expanduser()
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read configuration {file}: {error.strerror or error}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"configuration {file} is larger than {MAX_CONFIG_BYTES} bytes")
    return parse(raw, path=file)


def parse(raw: bytes | str, *, path: Path | None = None) -> Config:
    """Parse TOML text into a :class:`Config`; relative paths resolve beside ``path``."""
    where = str(path) if path else "configuration"
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        document = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{where} is not valid TOML: {error}") from None
    sections: dict[str, Section] = {}
    roles: dict[str, Section] = {}
    base = path.parent if path else None
    for key, table in document.items():
        cls = section_class(key)
        if cls is None:
            known = ", ".join(sorted([*SECTIONS, *ROLE_SECTIONS]))
            raise ConfigError(f"{where} has unknown section [{key}] (known: {known})")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {key} must be a [section], not a value")
        target = sections if key in SECTIONS else roles
        target[key] = cls.from_table(table, base=base)
    return Config(path=path, roles=roles, **sections)  # type: ignore[arg-type]


S = TypeVar("S", bound=Section)


def override(section: S, **values: Any) -> S:
    """``section`` with every non-``None`` (and non-empty tuple) value replaced, re-validated."""
    hints = typing.get_type_hints(type(section))
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or (isinstance(value, tuple | list) and not value):
            continue
        changes[key] = _coerce(f"--{key.replace('_', '-')}", value, hints[key], None)
    updated = dataclasses.replace(section, **changes)
    updated.validate()
    return updated


def _coerce(where: str, value: Any, hint: Any, base: Path | None) -> Any:
    """Check ``value`` against the field's type; paths become :class:`Path`, lists tuples."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        converted = _try_coerce(value, option, base)
        if converted is not _NO:
            return converted
    expected = " or ".join(_describe(o) for o in options if o is not type(None))
    raise ConfigError(f"{where} must be {expected}, found {value!r}")


_NO = object()


def _try_coerce(value: Any, option: Any, base: Path | None) -> Any:
    origin = typing.get_origin(option)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(option)
        if not isinstance(value, list | tuple):
            return _NO
        items = [_try_coerce(item, item_type, base) for item in value]
        return _NO if any(item is _NO for item in items) else tuple(items)
    if option is bool:
        return value if isinstance(value, bool) else _NO
    if option is int:
        return value if type(value) is int else _NO
    if option is float:
        return float(value) if type(value) in (int, float) else _NO
    if option is str:
        return value if isinstance(value, str) else _NO
    if option is Path:
        if not isinstance(value, str | Path) or not str(value):
            return _NO
        resolved = Path(value).expanduser()
        return base / resolved if base is not None and not resolved.is_absolute() else resolved
    return _NO


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _describe(option: Any) -> str:
    if typing.get_origin(option) is tuple:
        return f"a list of {_describe(typing.get_args(option)[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "text"}.get(
        option, "a path"
    )
