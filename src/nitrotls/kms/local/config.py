"""Configuration of the local KMS: where it listens, whom it trusts, where it keeps state.

A file (TOML, or JSON when the name ends in ``.json``) with these optional members::

    listen = "127.0.0.1:7800"
    region = "us-east-1"
    data_dir = "kms-data"              # relative paths are relative to the file
    audit_log = "kms-data/audit.log"
    trust_dev_root = false
    audit_fsync = false
    max_request_bytes = 1048576
    max_connections = 64
    request_timeout_seconds = 30
    recipient_max_age_seconds = 300

    [[credentials]]
    access_key = "AKIAEXAMPLE"
    secret_env = "KMS_ADMIN_SECRET"    # or: secret = "..." (then the file must be mode 0600)
    principal = "arn:aws:iam::111122223333:role/admin"

Unknown members are an error (a typo must not silently weaken the server). With no credentials
the server accepts exactly one development credential, :data:`DEV_CREDENTIAL`, and says so.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from nitrotls import home
from nitrotls.kms.local.errors import ConfigError
from nitrotls.kms.local.sigv4 import Credential

DEV_ACCESS_KEY = "nitrotls-dev"
DEV_SECRET = "nitrotls-dev-secret"  # noqa: S105 - the documented development credential
DEV_PRINCIPAL = "arn:aws:iam::000000000000:role/nitrotls-dev"
DEV_CREDENTIAL = Credential(DEV_ACCESS_KEY, DEV_SECRET, DEV_PRINCIPAL)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7800
_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:.+$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_MEMBERS = {
    "listen", "region", "data_dir", "audit_log", "trust_dev_root", "audit_fsync",
    "max_request_bytes", "max_connections", "request_timeout_seconds",
    "recipient_max_age_seconds", "credentials",
}  # fmt: skip


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    region: str = "us-east-1"
    data_dir: Path | None = None  # default: <nitrotls home>/kms
    audit_log: Path | None = None  # default: <data_dir>/audit.log
    trust_dev_root: bool = False
    credentials: tuple[Credential, ...] = ()
    max_request_bytes: int = 1 << 20
    max_connections: int = 64
    request_timeout: float = 30.0
    recipient_max_age: timedelta = timedelta(minutes=5)
    audit_fsync: bool = False

    @property
    def uses_dev_credential(self) -> bool:
        return not self.credentials

    def credential_map(self) -> dict[str, Credential]:
        chosen = self.credentials or (DEV_CREDENTIAL,)
        return {credential.access_key: credential for credential in chosen}

    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else home.sub_dir("kms")

    def resolved_audit_log(self) -> Path:
        return (
            self.audit_log if self.audit_log is not None else self.resolved_data_dir() / "audit.log"
        )


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"listen address must be HOST:PORT (e.g. 127.0.0.1:7800), not {text!r}")
    return host, int(port)


def load_config(path: Path) -> ServerConfig:
    """Read a configuration file; every problem is a ConfigError naming the member."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read the KMS configuration {path}: {error}") from None
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid {_kind(path)}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a table of settings")
    unknown = set(data) - _MEMBERS
    if unknown:
        raise ConfigError(f"{path}: unknown settings {sorted(unknown)} (known: {sorted(_MEMBERS)})")
    return _build(data, path)


def _kind(path: Path) -> str:
    return "JSON" if path.suffix == ".json" else "TOML"


def _build(data: Mapping[str, Any], path: Path) -> ServerConfig:
    base = path.parent
    host, port = parse_listen(_get(data, "listen", str, f"{DEFAULT_HOST}:{DEFAULT_PORT}", path))
    region = _get(data, "region", str, "us-east-1", path)
    if not _REGION.match(region):
        raise ConfigError(f"{path}: region {region!r} does not look like an AWS region")
    credentials = _credentials(data.get("credentials", []), path)
    return ServerConfig(
        host=host,
        port=port,
        region=region,
        data_dir=_path(data, "data_dir", base, path),
        audit_log=_path(data, "audit_log", base, path),
        trust_dev_root=_get(data, "trust_dev_root", bool, False, path),
        credentials=credentials,
        max_request_bytes=_positive(data, "max_request_bytes", 1 << 20, path),
        max_connections=_positive(data, "max_connections", 64, path),
        request_timeout=float(_positive(data, "request_timeout_seconds", 30, path)),
        recipient_max_age=timedelta(
            seconds=_positive(data, "recipient_max_age_seconds", 300, path)
        ),
        audit_fsync=_get(data, "audit_fsync", bool, False, path),
    )


def _get(data: Mapping[str, Any], name: str, kind: type[Any], default: Any, path: Path) -> Any:
    value = data.get(name, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{path}: {name} must be a {kind.__name__}, not {value!r}")
    return value


def _positive(data: Mapping[str, Any], name: str, default: int, path: Path) -> int:
    value: int = _get(data, name, int, default, path)
    if value <= 0:
        raise ConfigError(f"{path}: {name} must be positive, not {value}")
    return value


def _path(data: Mapping[str, Any], name: str, base: Path, path: Path) -> Path | None:
    if name not in data:
        return None
    value = Path(_get(data, name, str, "", path)).expanduser()
    return value if value.is_absolute() else (base / value).resolve()


def _credentials(items: Any, path: Path) -> tuple[Credential, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{path}: credentials must be a list of tables")
    found: dict[str, Credential] = {}
    for number, item in enumerate(items, start=1):
        where = f"{path}: credentials #{number}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table")
        extra = set(item) - {"access_key", "secret", "secret_env", "principal"}
        if extra:
            raise ConfigError(f"{where}: unknown members {sorted(extra)}")
        access_key = _get(item, "access_key", str, "", path)
        principal = _get(item, "principal", str, "", path)
        if not access_key or access_key in found:
            raise ConfigError(f"{where}: access_key must be present and unique")
        if not _PRINCIPAL.match(principal):
            raise ConfigError(
                f"{where}: principal must be an IAM or STS ARN such as "
                f"arn:aws:iam::111122223333:role/name, not {principal!r}"
            )
        found[access_key] = Credential(access_key, _secret(item, where, path), principal)
    return tuple(found.values())


def _secret(item: Mapping[str, Any], where: str, path: Path) -> str:
    if ("secret" in item) == ("secret_env" in item):
        raise ConfigError(f"{where}: give exactly one of secret and secret_env")
    if "secret_env" in item:
        name = _get(item, "secret_env", str, "", path)
        value = os.environ.get(name, "")
        if not value:
            raise ConfigError(f"{where}: environment variable {name!r} is not set")
        return value
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ConfigError(
            f"{path} holds a secret but other users can read it (mode {mode & 0o777:o}); "
            "chmod 600 it, or use secret_env"
        )
    secret = _get(item, "secret", str, "", path)
    if not secret:
        raise ConfigError(f"{where}: secret must not be empty")
    return str(secret)
