"""Files the demo writes for others to read: the allow list, and ``endpoint.json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from nitrotls.demo.layout import BUNDLE_NAME, DemoLayout
from nitrotls.nsm import write_atomic


def write_allowlist(path: Path, destinations: Sequence[str]) -> None:
    """The outbound proxy's allow list: exactly these ``host:port`` pairs."""
    lines = ["# Written by `nitrotls demo`: the only places the enclaves may reach.\n"]
    for destination in destinations:
        host, _, port = destination.rpartition(":")
        lines.append(f'\n[[allow]]\naddress = "{host}"\nport = {int(port)}\n')
    write_atomic(path, "".join(lines).encode(), mode=0o644)


def write_endpoint(layout: DemoLayout, url: str, ca_cert: Path) -> Path:
    """``demo/endpoint.json`` (atomic): where the demo serves and how to check it."""
    data = {
        "url": url,
        "ca_cert": str(ca_cert),
        "main_pcrs": str(layout.pcrs_file("main")),
        "generator_pcrs": str(layout.pcrs_file("generator")),
        "store": layout.store_spec,
        "bundle_name": BUNDLE_NAME,
    }
    write_atomic(layout.endpoint, (json.dumps(data, indent=2) + "\n").encode(), mode=0o644)
    return layout.endpoint


def vsock_path(cid: int, port: int) -> Path:
    """The development socket behind ``vsock://cid:port`` (the children use the same mapping)."""
    from nitrotls.transport import dev_socket_path

    return dev_socket_path(cid, port)
