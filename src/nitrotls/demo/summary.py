"""The summary a newcomer reads: what was proven, the measurements, and how to try it."""

from __future__ import annotations

import shlex

import platformdirs
from rich.console import Console
from rich.markup import escape

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
    """What was proven, the measurements, and the commands to check it by hand."""
    proof = result.proof
    ca_name = "Pebble (a test ACME CA)" if result.ca_kind == "pebble" else "the local dev CA"
    generator_pcr0 = result.generator_pcrs[0].hex()
    greeting = proof.body.splitlines()[0] if proof.body else ""
    lines = [
        f"[bold green]✓ verified[/]: {escape(result.url)} is served by the measured main "
        "enclave, and only by it.",
        "",
        "[bold]What was proven[/]",
        f"  • TLS: the certificate for {escape(proof.subject)} chains to {ca_name}.",
        "  • On that same connection the enclave answered a fresh attestation document (our "
        f"nonce {proof.nonce[:16]}…), signed through the simulated NSM's dev root, binding this "
        f"certificate's public key (SPKI sha384 {proof.spki_sha384[:16]}…) and bundle "
        f"{proof.bundle_id[:16]}….",
        "  • Its measurements are the main enclave image's "
        f"({escape(str(result.layout.pcrs_file('main')))}):",
        *(f"      PCR{i} {value}" for i, value in sorted(proof.pcrs.items())),
        f"  • The key was born in the generator enclave (PCR0 {generator_pcr0[:16]}…) and "
        f"sealed at once under KMS key {escape(result.kms_key_id)}, whose policy releases "
        "the data key only to the main image's PCRs. No file on the host holds it in clear.",
        f"  • The web app answered through the enclave: [italic]{escape(greeting)}[/]",
        "",
        "[bold]Try it yourself[/] (while the demo is serving)",
        *(f"  $ {escape(command)}" for command in try_commands(result)),
        "",
        _timing(result),
        f"Details: {escape(str(result.layout.endpoint))}; logs in "
        f"{escape(str(result.layout.logs))}; bundle {BUNDLE_NAME!r} in "
        f"{escape(result.layout.store_spec)}",
    ]
    console.rule("[bold]nitrotls demo[/]")
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    console.rule()


def _timing(result: DemoResult) -> str:
    what = "issued a new bundle" if result.issued else "reused the bundle, key and KMS key"
    text = f"Ready in {result.seconds:.1f} s ({what})"
    previous = result.previous
    if previous is not None:
        before = "issued" if previous.issued else "reused"
        text += f"; previous run: {previous.seconds:.1f} s ({before})"
    return text + "."
