"""`nitrotls demo`: the whole system on one machine, proven by an attested connection."""

from __future__ import annotations

import click


@click.command(name="demo")
@click.option(
    "--exit-after-verify",
    is_flag=True,
    help="Stop everything and exit 0 once the attested connection verified (for CI).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8443,
    show_default=True,
    help="Public port of the host's inbound proxy on 127.0.0.1 (0: any free port).",
)
@click.option(
    "--ca",
    type=click.Choice(["auto", "pebble", "local"]),
    default="auto",
    show_default=True,
    help="Pebble (a test ACME CA) when installed, else the local dev CA.",
)
@click.option(
    "--start-timeout",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Longest wait, in seconds, for any one process to become ready.",
)
def command(exit_after_verify: bool, port: int, ca: str, start_timeout: float) -> None:
    """Run KMS, a CA, the host proxies and two simulated enclaves here; prove it with a client.

    Nothing leaves this machine (no AWS, no internet). State is kept under
    $NITROTLS_HOME/demo, so a second run reuses the keys and the bundle.
    """
    from nitrotls.cli.output import console
    from nitrotls.demo import DemoOptions, run_demo

    options = DemoOptions(
        port=port, exit_after_verify=exit_after_verify, ca=ca, start_timeout=start_timeout
    )
    status = run_demo(options, console)
    if status:
        raise click.exceptions.Exit(status)
