"""`nitrotls host …`: the parent instance's side of the enclave's network."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from nitrotls.cli import host_acme
from nitrotls.transport import (
    Address,
    AddressError,
    Destination,
    ProxyServer,
    describe,
    inbound_opener,
    load_allowlist,
    outbound_opener,
    parse_address,
)
from nitrotls.transport.service import configure_logging, ensure_fd_budget, run_until_signal

F = TypeVar("F", bound=Callable[..., Any])


def address_option(*names: str, help: str) -> Callable[[F], F]:
    """A required ``vsock://CID:PORT`` | ``unix:///PATH`` | ``tcp://HOST:PORT`` option."""

    def convert(ctx: click.Context, param: click.Parameter, value: str) -> Address:
        try:
            return parse_address(value)
        except AddressError as error:
            raise click.BadParameter(str(error), ctx, param) from None

    return click.option(*names, metavar="ADDRESS", required=True, callback=convert, help=help)


def destination_option(*names: str, help: str) -> Callable[[F], F]:
    """An optional ``HOST:PORT`` (``[IPV6]:PORT``) option."""

    def convert(
        ctx: click.Context, param: click.Parameter, value: str | None
    ) -> Destination | None:
        if value is None:
            return None
        try:
            return Destination.parse(value)
        except AddressError as error:
            raise click.BadParameter(str(error), ctx, param) from None

    return click.option(*names, metavar="HOST:PORT", default=None, callback=convert, help=help)


def proxy_options(function: F) -> F:
    """Options every relaying command shares."""
    decorators = [
        click.option(
            "--max-connections",
            type=click.IntRange(min=1),
            default=512,
            show_default=True,
            help="Refuse new connections beyond this many open ones.",
        ),
        click.option(
            "--idle-timeout",
            type=click.FloatRange(min=0),
            default=300.0,
            show_default=True,
            help="Close a connection after this many seconds without a byte (0: never).",
        ),
        click.option(
            "--connect-timeout",
            type=click.FloatRange(min=0.1),
            default=10.0,
            show_default=True,
            help="Give up reaching the upstream after this many seconds.",
        ),
        click.option(
            "--drain",
            type=click.FloatRange(min=0),
            default=5.0,
            show_default=True,
            help="On SIGTERM/SIGINT, let open connections finish for this many seconds.",
        ),
        click.option("--json-logs", is_flag=True, help="Log JSON lines instead of text."),
        click.option("-v", "--verbose", is_flag=True, help="Log every connection."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def run_proxy(server: ProxyServer, summary: str, options: dict[str, Any]) -> None:
    """Log one start line, then relay until SIGTERM/SIGINT (shared by host and enclave)."""
    describe(server.listen_address)  # settle the vsock mode before anything starts
    configure_logging(json_lines=options["json_logs"], verbose=options["verbose"])
    ensure_fd_budget(server.max_connections)
    idle = f"{options['idle_timeout']:g}s" if options["idle_timeout"] else "off"

    def announce(started: ProxyServer) -> None:
        logging.getLogger("nitrotls.transport").info(
            "%s listening on %s -> %s; max-connections %d, idle-timeout %s",
            started.name,
            describe(started.address),
            summary,
            started.max_connections,
            idle,
        )

    asyncio.run(run_until_signal([server], drain=options["drain"], announce=announce))


@click.group(name="host")
def group() -> None:
    """The parent instance: relay client traffic in, and allow-listed traffic out."""


@group.command(name="inbound")
@address_option("--listen", "listen_at", help="e.g. tcp://0.0.0.0:443")
@address_option("--to", "to", help="The enclave, e.g. vsock://16:443")
@click.option(
    "--proxy-protocol",
    is_flag=True,
    help="Send a PROXY protocol v2 header first, so the enclave learns the client address.",
)
@proxy_options
def inbound(listen_at: Address, to: Address, proxy_protocol: bool, **options: Any) -> None:
    """Pass client connections byte for byte to the enclave (TLS ends inside it)."""
    describe(to)
    opener = inbound_opener(
        to, proxy_header=proxy_protocol, connect_timeout=options["connect_timeout"]
    )
    server = _server("host inbound", listen_at, opener, options)
    summary = describe(to) + ("; PROXY protocol v2 header on" if proxy_protocol else "")
    run_proxy(server, summary, options)


@group.command(name="outbound")
@address_option("--listen", "listen_at", help="e.g. vsock://3:8000")
@click.option(
    "--allow",
    "allow_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="TOML allow list: [[allow]] address = HOST, port = PORT (see docs/transport.md).",
)
@destination_option(
    "--to",
    "to",
    help="Send every connection here (must be allow-listed); without it each connection "
    "names its destination with a 'CONNECT host:port' line.",
)
@proxy_options
def outbound(listen_at: Address, allow_file: Path, to: Destination | None, **options: Any) -> None:
    """Let the enclave reach allow-listed host:port pairs, and nothing else."""
    allow = load_allowlist(allow_file)
    opener = outbound_opener(allow, to=to, connect_timeout=options["connect_timeout"])
    server = _server("host outbound", listen_at, opener, options)
    if to is not None:
        summary = f"{to} (fixed destination)"
    else:
        summary = f"CONNECT-preamble destinations, {len(allow)} allowed ({allow_file})"
    run_proxy(server, summary, options)


def _server(name: str, listen_at: Address, opener: Any, options: dict[str, Any]) -> ProxyServer:
    return ProxyServer(
        name,
        listen_at,
        opener,
        max_connections=options["max_connections"],
        idle_timeout=options["idle_timeout"] or None,
    )


host_acme.register(group)
