"""`nitrotls generator run`: issue, seal, bind and publish certificates inside the enclave."""

from __future__ import annotations

import atexit
import gc
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from nitrotls import config as config_module
from nitrotls.cli.output import print_json

if TYPE_CHECKING:
    from nitrotls.generator import Outcome


@click.group(name="generator")
def group() -> None:
    """The generator enclave: keys born here, sealed via KMS, certified, published as bundles."""


@group.command(name="run")
@click.option("--once", is_flag=True, help="Issue (or renew if due) and exit; default: daemon.")
@click.option("--force", is_flag=True, help="Issue even when the current bundle is not due.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="nitrotls.toml (default: $NITROTLS_CONFIG; else defaults and these options).",
)
@click.option("--name", help="Bundle name (default: the first domain).")
@click.option("--domain", "domains", multiple=True, help="A name to certify (repeat).")
@click.option("--key-type", type=click.Choice(config_module.KEY_TYPES), help="Default p256.")
@click.option("--ca", "ca_server", metavar="local|acme:URL", help="The CA (default local).")
@click.option(
    "--ca-bundle",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM roots for the ACME server's own TLS.",
)
@click.option("--contact", "contacts", multiple=True, help="ACME account contact (repeat).")
@click.option("--eab-kid", help="External account binding key id.")
@click.option("--eab-hmac", help="EAB HMAC key, base64url (or $NITROTLS_EAB_HMAC).")
@click.option("--challenge", type=click.Choice(config_module.CHALLENGES), help="Default http-01.")
@click.option("--dns-hook", help="Command called as CMD add|remove RECORD VALUE (dns-01).")
@click.option("--kms-endpoint", help="KMS endpoint URL (default: AWS's regional endpoint).")
@click.option("--kms-region", help="KMS region (default us-east-1).")
@click.option("--kms-key-id", help="KMS key id, ARN or alias/NAME.")
@click.option("--store", "store_spec", help="dir:PATH or s3://bucket/prefix?endpoint_url=…")
@click.option(
    "--main-pcrs",
    "main_pcrs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PCR file of a main enclave allowed to open bundles (logged; feeds `kms policy`).",
)
@click.option("--lease-ttl", type=float, help="Store lease TTL in seconds (default 300).")
@click.option("--log-json", is_flag=True, help="One JSON object per log line.")
def run(
    once: bool,
    force: bool,
    config_path: Path | None,
    name: str | None,
    domains: tuple[str, ...],
    key_type: str | None,
    ca_server: str | None,
    ca_bundle: Path | None,
    contacts: tuple[str, ...],
    eab_kid: str | None,
    eab_hmac: str | None,
    challenge: str | None,
    dns_hook: str | None,
    kms_endpoint: str | None,
    kms_region: str | None,
    kms_key_id: str | None,
    store_spec: str | None,
    main_pcrs: tuple[Path, ...],
    lease_ttl: float | None,
    log_json: bool,
) -> None:
    """Issue and renew the bundle for one name (options override nitrotls.toml)."""
    with _collector_set_aside() as started_up:
        from nitrotls.attestation import load_pcrs_file
        from nitrotls.config import Config, override
        from nitrotls.generator import Runner, StepLog, configure_logging, identify, make_issuer
        from nitrotls.nsm import enclave_from_spec

        loaded = config_module.load(config_path)
        settings = Config(
            generator=override(
                loaded.generator,
                bundle=name,
                domains=domains,
                key_type=key_type,
                main_pcrs=main_pcrs,
                lease_ttl=lease_ttl,
                log_json=log_json or None,
            ),
            kms=override(loaded.kms, endpoint=kms_endpoint, region=kms_region, key_id=kms_key_id),
            store=override(loaded.store, spec=store_spec),
            ca=override(
                loaded.ca,
                server=ca_server,
                ca_bundle=ca_bundle,
                contact=contacts,
                eab_kid=eab_kid,
                eab_hmac=eab_hmac,
                challenge=challenge,
                dns_hook=dns_hook,
            ),
            path=loaded.path,
        )
        configure_logging(json_lines=settings.generator.log_json)
        log = StepLog()
        source = enclave_from_spec(None)
        identify(source, log)
        for path in settings.generator.main_pcrs:
            pcrs = load_pcrs_file(path)
            shown = " ".join(
                f"PCR{i}={pcrs[i].hex()[:16]}…" for i in sorted(pcrs) if i in (0, 1, 2)
            )
            log.step(
                "policy",
                f"main enclave {path.name} ({shown}) is to open bundles via the key policy",
            )
        issuer = make_issuer(settings, source, log=log)
        started_up()
        stop = threading.Event()
        try:
            if once:
                outcome = Runner(issuer, log=log, stop=stop).once(force=force)
                if settings.generator.log_json:
                    print_json(_outcome_json(outcome))
                return
            _stop_on_signals(stop)
            Runner(issuer, log=log, stop=stop).forever(force=force)
        finally:
            issuer.close()


@contextmanager
def _collector_set_aside() -> Iterator[Callable[[], None]]:
    """Start-up without cyclic garbage collection; its objects then set aside until exit.

    Start-up (imports, botocore's service models, the configuration) makes some 100 000 objects
    that live as long as the process; collecting while they are made, and tracing them again at
    every later full collection and at interpreter exit, cost a fresh ``--once`` process about a
    fifth of its run time (about 80 ms; bench/issuance.py) and freed a few hundred objects.
    Calling the yielded ``started_up()`` moves them to the permanent generation (``gc.freeze``,
    CPython's documented use) and collection resumes for everything made later. On leaving, they
    rejoin the collector (an in-process caller is left as it was); at interpreter exit everything
    is frozen again, so finalisation frees by reference counting without tracing the whole heap
    (output is still flushed: logging's and the standard streams' flushes do not need the
    collector). Nothing secret depends on it: secrets are wiped explicitly where they are used.
    """
    enabled = gc.isenabled()
    gc.disable()
    frozen = False

    def started_up() -> None:
        nonlocal frozen
        if not frozen:
            frozen = True
            gc.freeze()
            if enabled:
                gc.enable()

    try:
        yield started_up
    finally:
        started_up()
        gc.unfreeze()
        atexit.unregister(gc.freeze)  # registered once, however often this runs in a process
        atexit.register(gc.freeze)


def _outcome_json(outcome: Outcome) -> dict[str, object]:
    """The outcome as plain JSON values."""
    values = asdict(outcome)
    values["not_after"] = outcome.not_after.isoformat() if outcome.not_after else None
    return values


def _stop_on_signals(stop: threading.Event) -> None:
    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
