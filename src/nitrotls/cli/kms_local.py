"""`nitrotls kms serve` and `nitrotls kms audit` (the local KMS server's commands)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from nitrotls.cli.output import err_console, json_option, print_json
from nitrotls.kms.local import (
    DEV_ACCESS_KEY,
    DEV_PRINCIPAL,
    DEV_SECRET,
    AuditError,
    LocalKMSServer,
    ServerConfig,
    load_config,
    parse_listen,
    serve,
    verify_log,
)

_CONFIG = click.Path(exists=True, dir_okay=False, path_type=Path)


def register(group: click.Group) -> None:
    """Add the local-server commands to the ``kms`` group."""
    group.add_command(serve_command)
    group.add_command(audit_group)


def _config(path: Path | None) -> ServerConfig:
    return load_config(path) if path is not None else ServerConfig()


@click.command(name="serve")
@click.option("--listen", default=None, help="HOST:PORT to listen on (default 127.0.0.1:7800).")
@click.option(
    "--trust-dev-root",
    is_flag=True,
    help="Also accept Recipient documents from the simulated NSM's dev root. Never in prod.",
)
@click.option("--config", "config_path", type=_CONFIG, default=None, help="TOML or JSON file.")
def serve_command(listen: str | None, trust_dev_root: bool, config_path: Path | None) -> None:
    """Run a local KMS speaking AWS KMS's protocol, enforcing attestation in key policies."""
    config = _config(config_path)
    if listen is not None:
        host, port = parse_listen(listen)
        config = replace(config, host=host, port=port)
    if trust_dev_root:
        config = replace(config, trust_dev_root=True)
    serve(config, announce=_announce)


def _announce(server: LocalKMSServer) -> None:
    config = server.config
    roots = "the AWS Nitro root" + (" and the local dev root" if config.trust_dev_root else "")
    click.echo(f"nitrotls local KMS listening on {server.endpoint_url}")
    click.echo(
        f"  region {config.region}; keys in {server.data_dir}; audit log {server.audit_path}"
    )
    click.echo(f"  Recipient documents trusted from {roots}")
    if config.uses_dev_credential:
        err_console.print(
            "[bold yellow]warning[/]: no credentials configured; accepting only the development "
            f"credential: access key {DEV_ACCESS_KEY}, secret {DEV_SECRET}, principal "
            f"{DEV_PRINCIPAL}",
            highlight=False,
        )
    click.echo("  stop with Ctrl-C or SIGTERM")


@click.group(name="audit")
def audit_group() -> None:
    """The local KMS's audit log."""


@audit_group.command(name="verify")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--config", "config_path", type=_CONFIG, default=None, help="Server config file.")
@json_option
def audit_verify(file: Path | None, config_path: Path | None, as_json: bool) -> None:
    """Check the hash chain of an audit log; name the first broken line (exit 1)."""
    path = file if file is not None else _config(config_path).resolved_audit_log()
    report = verify_log(path)
    if as_json:
        print_json(
            {
                "path": str(report.path),
                "ok": report.ok,
                "lines_verified": report.lines,
                "broken_line": report.broken_line,
                "problem": report.problem or None,
            }
        )
        if not report.ok:
            raise click.exceptions.Exit(1)
        return
    if not report.ok:
        raise AuditError(
            f"{report.path}: line {report.broken_line} is broken: {report.problem} "
            f"(lines before it verify)"
        )
    click.echo(f"{report.path}: {report.lines} lines, chain intact")
