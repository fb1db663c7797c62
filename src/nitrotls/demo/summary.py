"""The summary a newcomer reads: what was proven, the measurements, and how to try it."""

from __future__ import annotations

import shlex

import platformdirs
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from nitrotls import home
from nitrotls.demo.layout import BUNDLE_NAME
from nitrotls.demo.orchestrator import DemoResult


def home_prefix() -> str:
    """``--home DIR `` when the data directory is not the default (the dev root lives there)."""
    default = platformdirs.user_data_dir("nitrotls", appauthor=False)
    current = home.data_dir()
    return "" if str(current) == default else f"--home {shlex.quote(str(current))} "


def try_commands(result: DemoResult) -> list[str]:
    """The two commands that check the endpoint by hand."""
    ca = shlex.quote(str(result.ca_cert))
    pcrs = shlex.quote(str(result.layout.pcrs_file("main")))
    return [
        f"curl --cacert {ca} {result.url}/",
        f"nitrotls {home_prefix()}verify {result.url} --pcrs-file {pcrs} --cacert {ca} --dev",
    ]


def print_summary(console: Console, result: DemoResult) -> None:
    proof = result.proof
    ca_name = "Pebble (a test ACME CA)" if result.ca_kind == "pebble" else "the local dev CA"
    lines = [
        f"[bold green]✓ verified[/]: {escape(result.url)} is served by the measured main "
        "enclave, and only by it.",
        "",
        "[bold]What was proven[/]",
        f"  • TLS: the certificate for {escape(proof.subject)} chains to {ca_name}.",
        "  • On that same connection the server answered a fresh attestation document "
        f"(our nonce {proof.nonce[:16]}…), signed by the simulated NSM's dev root, that binds "
        f"this certificate's public key (SPKI sha384 {proof.spki_sha384[:16]}…) and bundle "
        f"{proof.bundle_id[:16]}….",
        "  • Its measurements equal the main enclave image's, so that image holds the key:",
    ]
    lines += [f"      PCR{i} {value}" for i, value in sorted(proof.pcrs.items())]
    generator_pcr0 = result.generator_pcrs[0].hex()
    lines += [
        f"  • The key was born in the generator enclave (PCR0 {generator_pcr0[:16]}…) and "
        f"sealed at once under KMS key {escape(result.kms_key_id)}, whose policy releases the "
        "data key only to the main image's PCRs; no file on the host holds it in the clear.",
        f"  • The web app answered through the enclave: "
        f"[italic]{escape(proof.body.splitlines()[0] if proof.body else '')}[/]",
        "",
        "[bold]Try it yourself[/] (while the demo is serving)",
    ]
    lines += [f"  $ {escape(command)}" for command in try_commands(result)]
    lines += ["", _timing(result)]
    console.print(Panel("\n".join(lines), title="nitrotls demo", border_style="green"))
    table = Table(show_header=False, box=None, padding=(0, 1))
    table.add_row("endpoint", escape(str(result.layout.endpoint)))
    table.add_row("store", escape(result.layout.store_spec) + f"  (bundle {BUNDLE_NAME!r})")
    table.add_row("logs", escape(str(result.layout.logs)))
    console.print(table)


def _timing(result: DemoResult) -> str:
    what = "issued a new bundle" if result.issued else "reused the bundle, key and KMS key"
    text = f"Ready in {result.seconds:.1f} s ({what})"
    previous = result.previous
    if previous is not None:
        before = "issued" if previous.issued else "reused"
        text += f"; previous run: {previous.seconds:.1f} s ({before})"
    return text + "."
