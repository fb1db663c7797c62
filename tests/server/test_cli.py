"""`nitrotls serve` argument handling: typed errors with their exit codes, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nitrotls.cli import cli
from nitrotls.server.errors import ServerConfigError, TLSContextError


def invoke(*args: str) -> BaseException | None:
    result = CliRunner().invoke(cli, list(args))
    return result.exception


def test_needs_exactly_one_mode(image: Path, tmp_path: Path) -> None:
    error = invoke("--enclave", f"simulated:{image}", "serve", "--name", "n")
    assert isinstance(error, ServerConfigError) and error.exit_code == 2
    assert "--upstream" in str(error)


def test_insecure_cert_needs_key(image: Path, tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    error = invoke(
        "--enclave", f"simulated:{image}", "serve", "--upstream", "http://127.0.0.1:1",
        "--insecure-bundled-cert", str(cert),
    )  # fmt: skip
    assert isinstance(error, ServerConfigError) and "--key" in str(error)


def test_insecure_files_that_do_not_load(image: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    error = invoke(
        "--enclave", f"simulated:{image}", "serve", "--upstream", "http://127.0.0.1:1",
        "--insecure-bundled-cert", str(cert), "--key", str(key),
    )  # fmt: skip
    assert isinstance(error, TLSContextError) and error.exit_code == 65


def test_bundle_mode_needs_generator_pcrs(image: Path) -> None:
    error = invoke(
        "--enclave", f"simulated:{image}", "serve", "--upstream", "http://127.0.0.1:1",
        "--name", "example",
    )  # fmt: skip
    assert isinstance(error, ServerConfigError) and "--generator-pcrs" in str(error)


def test_bad_listen_address(image: Path) -> None:
    error = invoke(
        "--enclave", f"simulated:{image}", "serve", "--upstream", "http://127.0.0.1:1",
        "--listen", "127.0.0.1:8443", "--name", "n",
    )  # fmt: skip
    assert isinstance(error, ServerConfigError) and "scheme" in str(error)


def test_server_section_of_the_config_file_is_used(image: Path, tmp_path: Path) -> None:
    config = tmp_path / "nitrotls.toml"
    config.write_text('[server]\nupstream = "http://127.0.0.1:1"\nlisten = "tcp://127.0.0.1:0"\n')
    error = invoke("--enclave", f"simulated:{image}", "serve", "--config", str(config))
    # The mode came from the file; what is missing now is the bundle name.
    assert isinstance(error, ServerConfigError) and "bundle name" in str(error)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--header-timeout", "nan"),
        ("--reload-interval", "nan"),
        ("--idle-timeout", "inf"),
        ("--grace", "nan"),
        ("--grace", "inf"),
    ],
)
def test_non_finite_durations_are_refused(image: Path, option: str, value: str) -> None:
    """nan passes every `<= 0` test: it used to reach the loop (no 408, exit 0, a traceback)."""
    error = invoke(
        "--enclave", f"simulated:{image}", "serve", "--upstream", "http://127.0.0.1:9",
        "--name", "n", option, value,
    )  # fmt: skip
    assert error is not None and getattr(error, "exit_code", None) == 2, repr(error)
    assert value in str(error)


def test_health_on_vsock_is_refused_before_loading(image: Path) -> None:
    error = invoke(
        "--enclave", f"simulated:{image}", "serve", "--upstream", "http://127.0.0.1:9",
        "--name", "n", "--health", "vsock://16:9901",
    )  # fmt: skip
    assert isinstance(error, ServerConfigError) and error.exit_code == 2
    assert "tcp:// or unix://" in str(error)


def _bundle_mode(image: Path, *extra: str) -> BaseException | None:
    pcrs = image.parent / "pcrs.json"
    if not pcrs.exists():
        pcrs.write_text("not a measurements file")
    return invoke(
        "--enclave", f"simulated:{image}", "serve", "--upstream", "http://127.0.0.1:9",
        "--name", "n", "--generator-pcrs", str(pcrs), *extra,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        ((), "PCRFileError"),  # the generator PCR file is not one
        (("--store", "ftp://x"), "StoreSpecError"),
        (("--alpn", "x" * 256), "ConfigError"),
    ],
)
def test_configuration_errors_exit_2(image: Path, extra: tuple[str, ...], kind: str) -> None:
    if kind != "PCRFileError":
        (image.parent / "pcrs.json").write_text('{"PCR0": "' + "00" * 48 + '"}')
    error = _bundle_mode(image, *extra)
    assert error is not None and type(error).__name__.endswith(kind), repr(error)
    assert getattr(error, "exit_code", None) == 2


def test_bad_kms_endpoint_is_a_configuration_error(image: Path) -> None:
    pcrs = image.parent / "pcrs.json"
    pcrs.write_text('{"PCR0": "' + "11" * 48 + '", "PCR1": "' + "22" * 48 + '", "PCR2": "'
                    + "33" * 48 + '"}')  # fmt: skip
    error = _bundle_mode(image, "--kms-endpoint", "notaurl")
    assert isinstance(error, ServerConfigError) and error.exit_code == 2, repr(error)
    assert "notaurl" in str(error)
