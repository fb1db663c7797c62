"""`nitrotls serve`: the main enclave's TLS front (reverse proxy, raw TCP or ASGI app)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from nitrotls.cli.output import err_console, json_option, print_json

_PATH = click.Path(dir_okay=False, path_type=Path)


@click.command(name="serve")
@click.option(
    "--config", "config_path", type=_PATH, help="nitrotls.toml (default: $NITROTLS_CONFIG)."
)
@click.option("--listen", metavar="ADDR", help="tcp://HOST:PORT, unix:///PATH or vsock://CID:PORT.")
@click.option(
    "--upstream", metavar="URL", help="http://HOST:PORT (reverse proxy) or tcp://HOST:PORT."
)
@click.option("--app", metavar="MODULE:ATTR", help="An ASGI app served in-process by uvicorn.")
@click.option("--store", "store_spec", help="dir:PATH or s3://bucket/prefix?… (default: local).")
@click.option("--name", "bundle", help="The bundle name in the store.")
@click.option(
    "--generator-pcrs",
    "generator_pcrs",
    multiple=True,
    type=_PATH,
    help="PCR file of an accepted generator image (repeat).",
)
@click.option(
    "--ca-cert",
    "ca_roots",
    multiple=True,
    type=_PATH,
    help="CA root the chain must lead to (repeat; default: not checked).",
)
@click.option(
    "--dev",
    "trust_dev_root",
    is_flag=True,
    default=None,
    help="Trust this machine's simulated-NSM dev root (development).",
)
@click.option("--kms-endpoint", help="KMS endpoint URL (default: AWS's regional endpoint).")
@click.option("--kms-region", help="KMS region (default us-east-1).")
@click.option("--health", metavar="ADDR", help="Local address for /healthz, /readyz, /metrics.")
@click.option(
    "--proxy-protocol",
    is_flag=True,
    default=None,
    help="Expect a PROXY v2 header from the host's inbound proxy.",
)
@click.option("--max-connections", type=click.IntRange(min=1))
@click.option("--header-timeout", type=float, help="Seconds to receive a request head.")
@click.option("--idle-timeout", type=float, help="Keep-alive idle seconds.")
@click.option("--upstream-timeout", type=float, help="Seconds of upstream silence before 504.")
@click.option("--grace", type=float, help="Graceful shutdown seconds.")
@click.option("--reload-interval", type=float, help="Store poll interval in seconds.")
@click.option(
    "--start-attempts",
    type=click.IntRange(min=1),
    help="Attempts to reach the store and KMS at start-up (default 6).",
)
@click.option("--alpn", "raw_alpn", multiple=True, help="Extra ALPN value in tcp:// mode (repeat).")
@click.option(
    "--one-shot",
    is_flag=True,
    default=None,
    help="Drop the TLS context (and key) after the first completed handshake.",
)
@click.option(
    "--insecure-bundled-cert",
    "insecure_cert",
    type=_PATH,
    help="DEVELOPMENT ONLY: serve this PEM chain file baked into the image.",
)
@click.option("--key", "insecure_key", type=_PATH, help="The key file for --insecure-bundled-cert.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
@json_option
def command(
    config_path: Path | None,
    store_spec: str | None,
    kms_endpoint: str | None,
    kms_region: str | None,
    insecure_cert: Path | None,
    insecure_key: Path | None,
    log_level: str,
    as_json: bool,
    **overrides: Any,
) -> None:
    """Serve TLS from a bundle (or, for development, from bundled files) until stopped."""
    from nitrotls import config as config_module
    from nitrotls.config import override
    from nitrotls.nsm import enclave_from_spec
    from nitrotls.server.app import Backends, run
    from nitrotls.server.config import ServerSection
    from nitrotls.server.errors import ServerConfigError

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    loaded = config_module.load(config_path)
    section = override(getattr(loaded, "server", ServerSection()), **overrides)
    if (insecure_cert is None) != (insecure_key is None):
        raise ServerConfigError("--insecure-bundled-cert CERT needs --key KEY (and vice versa)")
    if insecure_cert is not None:
        err_console.print(
            "[bold red]WARNING: --insecure-bundled-cert is for development only: the key is in "
            "the image, so anyone holding the image holds the key.[/]"
        )
    kms = override(loaded.kms, endpoint=kms_endpoint, region=kms_region)
    backends = Backends(
        store_spec=override(loaded.store, spec=store_spec).spec,
        kms_endpoint=kms.endpoint,
        kms_region=kms.region,
    )

    def ready(info: dict[str, Any]) -> None:
        if as_json:
            print_json(info)
        else:
            where = f", health on {info['health']}" if info["health"] else ""
            click.echo(
                f"serving {info['mode']} on {info['listen']} (bundle seq {info['seq']}, "
                f"certificate valid until {info['not_after']}){where}"
            )

    run(
        section,
        enclave=enclave_from_spec(None),
        backends=backends,
        insecure=(insecure_cert, insecure_key) if insecure_cert and insecure_key else None,
        on_ready=ready,
    )
