"""`nitrotls enclave …`: the enclave's side of its network."""

from __future__ import annotations

from typing import Any

import click

from nitrotls.cli.host import address_option, destination_option, proxy_options, run_proxy
from nitrotls.transport import Address, Destination, ProxyServer, describe, forward_opener


@click.group(name="enclave")
def group() -> None:
    """Inside the enclave: reach the outside world through the host."""


@group.command(name="forward")
@address_option("--listen", "listen_at", help="e.g. tcp://127.0.0.1:8443")
@address_option("--to", "to", help="The host proxy, e.g. vsock://3:8000")
@destination_option(
    "--preamble",
    help="Ask the host's outbound proxy for HOST:PORT first (when it has no fixed --to).",
)
@proxy_options
def forward(listen_at: Address, to: Address, preamble: Destination | None, **options: Any) -> None:
    """Forward local connections (boto3, the ACME client) to the host's outbound proxy."""
    describe(to)
    target = (preamble.host, preamble.port) if preamble else None
    opener = forward_opener(to, preamble=target, connect_timeout=options["connect_timeout"])
    server = ProxyServer(
        "enclave forward",
        listen_at,
        opener,
        max_connections=options["max_connections"],
        idle_timeout=options["idle_timeout"] or None,
    )
    summary = describe(to) + (f", asking for {preamble}" if preamble else "")
    run_proxy(server, summary, options)
