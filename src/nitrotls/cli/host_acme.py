"""`nitrotls host acme-responder`: serve HTTP-01 tokens from the store on the host."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import click

from nitrotls.ca.responder import POLL_INTERVAL, ChallengeServer, parse_listen
from nitrotls.store import open_store


def register(group: click.Group) -> None:
    """Add the ACME responder command to ``group``."""
    group.add_command(acme_responder)


@click.command(name="acme-responder")
@click.option(
    "--store",
    "store_spec",
    metavar="SPEC",
    default=None,
    help="Where the generator writes tokens: dir:PATH, PATH or s3://bucket/prefix "
    "(default: the data directory's store).",
)
@click.option(
    "--listen",
    default="0.0.0.0:80",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to serve /.well-known/acme-challenge/ on (the CA connects to port 80).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every request.")
def acme_responder(store_spec: str | None, listen: str, verbose: bool) -> None:
    """Answer ACME HTTP-01 challenges from the store until SIGTERM or SIGINT."""
    try:
        address = parse_listen(listen)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--listen") from None
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)
    store = open_store(store_spec, read_only=True)  # tokens are only ever read here
    try:
        server = ChallengeServer(address, store)
    except OSError as error:
        store.close()
        raise click.ClickException(
            f"cannot listen on {listen}: {error.strerror or error}"
        ) from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(
        target=server.serve_forever, args=(POLL_INTERVAL,), name="acme-responder", daemon=True
    )
    thread.start()
    click.echo(f"acme-responder serving tokens from {store!r} on {server.url}")
    try:
        while not stop.wait(timeout=1.0):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        store.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("acme-responder stopped")
