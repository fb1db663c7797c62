"""The outbound proxy's allow list: exact ``host:port`` pairs, loaded from TOML.

Format (one table per destination; no wildcards, no CIDRs, fail closed on anything else)::

    [[allow]]
    address = "kms.us-east-1.amazonaws.com"
    port = 443

Names match case-insensitively and without a trailing dot; IP literals match in canonical form.
A name is matched as written and then resolved by the host, so a destination is allowed by what
the operator wrote, never by what some DNS answer happens to point at.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nitrotls.transport.address import format_host_port, normalize_host, parse_host_port
from nitrotls.transport.errors import AddressError, AllowListError


@dataclass(frozen=True)
class Destination:
    """A normalized ``host:port`` an enclave may ask the host to reach."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``HOST:PORT`` or ``[IPV6]:PORT``; port 0 is refused."""
        host, port = parse_host_port(text)
        return cls.of(host, port)

    @classmethod
    def of(cls, host: str, port: int) -> Destination:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise AddressError(f"destination port must be 1-65535, found {port!r}")
        return cls(normalize_host(host), port)

    def __str__(self) -> str:
        return format_host_port(self.host, self.port)


@dataclass(frozen=True)
class AllowList:
    """A non-empty set of permitted destinations."""

    entries: frozenset[Destination]

    def __post_init__(self) -> None:
        if not self.entries:
            raise AllowListError("the allow list is empty: it would refuse everything")

    def permits(self, destination: Destination) -> bool:
        return destination in self.entries

    def __len__(self) -> int:
        return len(self.entries)


def load_allowlist(path: Path) -> AllowList:
    """Read and validate an allow-list file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AllowListError(f"cannot read allow list {path}: {error}") from None
    return parse_allowlist(text, source=str(path))


def parse_allowlist(text: str, *, source: str = "allow list") -> AllowList:
    """Parse allow-list TOML; every mistake names the entry and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise AllowListError(f"{source} is not valid TOML: {error}") from None
    extra = set(data) - {"allow"}
    if extra:
        raise AllowListError(
            f"{source}: unknown top-level keys {sorted(extra)}; expected [[allow]]"
        )
    tables = data.get("allow")
    if not isinstance(tables, list) or not tables:
        raise AllowListError(
            f'{source} has no [[allow]] entries; add e.g. [[allow]] address = "host" port = 443'
        )
    return AllowList(frozenset(_entry(table, index, source) for index, table in enumerate(tables)))


def _entry(table: Any, index: int, source: str) -> Destination:
    where = f"{source}: [[allow]] entry {index + 1}"
    if not isinstance(table, dict):
        raise AllowListError(f"{where} must be a table with address and port")
    unknown = set(table) - {"address", "port"}
    if unknown:
        raise AllowListError(f"{where} has unknown keys {sorted(unknown)}")
    address, port = table.get("address"), table.get("port")
    if not isinstance(address, str):
        raise AllowListError(f'{where} needs address = "HOST" (a string), found {address!r}')
    if not isinstance(port, int) or isinstance(port, bool):
        raise AllowListError(f"{where} needs port = NUMBER (an integer), found {port!r}")
    try:
        return Destination.of(address, port)
    except AddressError as error:
        raise AllowListError(f"{where}: {error}") from None
