"""Where to connect: ``https://HOST[:PORT]`` parsed once, with a typed error for anything else."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from nitrotls.client.errors import ClientError


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 443 else f"{host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.scheme != "https":
            raise ClientError(f"attested connections use https://, got {parts.scheme}://")
        try:
            port = parts.port or 443
        except ValueError:
            raise ClientError(f"bad port in {url!r}") from None
        if not parts.hostname:
            raise ClientError(f"no host in {url!r}")
        return cls(parts.hostname, port)
