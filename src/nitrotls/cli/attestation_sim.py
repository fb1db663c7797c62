"""`nitrotls attestation measure` and `simulate`: documents from the simulated NSM."""

from __future__ import annotations

from pathlib import Path

import click

from nitrotls.cli.output import console, json_option, print_json
from nitrotls.nsm import SimulatedNSM, measure_image, measure_signing_cert, write_atomic

_IMAGE = click.Path(exists=False, path_type=Path)
_CERT = click.Path(exists=True, dir_okay=False, path_type=Path)


class HexBytes(click.ParamType[bytes]):
    """A hex string given on the command line, as bytes."""

    name = "HEX"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> bytes:
        if isinstance(value, bytes):
            return value
        text = str(value).strip()
        try:
            return bytes.fromhex(text)
        except ValueError:
            self.fail(f"expected hexadecimal bytes, got {text[:40]!r}", param, ctx)


@click.command(name="measure")
@click.option("--image", required=True, type=_IMAGE, help="Simulated image: a file or directory.")
@click.option(
    "--signing-cert", type=_CERT, default=None, help="EIF signing certificate (adds PCR8)."
)
def measure(image: Path, signing_cert: Path | None) -> None:
    """Print an image's PCRs as `nitro-cli describe-eif` does (JSON)."""
    measurements: dict[str, str] = {"HashAlgorithm": "Sha384 { ... }"}
    for index, value in sorted(measure_image(image).items()):
        measurements[f"PCR{index}"] = value.hex()
    if signing_cert is not None:
        measurements["PCR8"] = measure_signing_cert(signing_cert).hex()
    print_json({"Measurements": measurements})


@click.command(name="simulate")
@click.option("--image", required=True, type=_IMAGE, help="Simulated image: a file or directory.")
@click.option("--debug", is_flag=True, help="A debug-mode enclave (PCR0, 1, 2 and 8 zero).")
@click.option(
    "--public-key-der",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File whose bytes become public_key.",
)
@click.option("--user-data-hex", type=HexBytes(), default=None, help="user_data, in hex.")
@click.option("--nonce-hex", type=HexBytes(), default=None, help="nonce, in hex.")
@click.option("--instance-id", default=None, help="Parent instance id (sets PCR4).")
@click.option("--signing-cert", type=_CERT, default=None, help="EIF signing cert (sets PCR8).")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output file."
)
@json_option
def simulate(
    image: Path,
    debug: bool,
    public_key_der: Path | None,
    user_data_hex: bytes | None,
    nonce_hex: bytes | None,
    instance_id: str | None,
    signing_cert: Path | None,
    out: Path,
    as_json: bool,
) -> None:
    """Write a simulated attestation document (raw COSE_Sign1) signed by the dev root."""
    nsm = SimulatedNSM(image, debug=debug, instance_id=instance_id, signing_cert=signing_cert)
    public_key = public_key_der.read_bytes() if public_key_der is not None else None
    document = nsm.attest(user_data=user_data_hex, nonce=nonce_hex, public_key=public_key)
    write_atomic(out, document)
    if as_json:
        print_json(
            {"out": str(out), "bytes": len(document), "module_id": nsm.module_id, "debug": debug}
        )
        return
    mode = " [bold red]debug[/]" if debug else ""
    console.print(
        f"wrote {out} ({len(document)} bytes): simulated{mode} document from {nsm.module_id}; "
        "verify it with --dev (the dev root is not trusted by default)",
        highlight=False,
        soft_wrap=True,
    )
