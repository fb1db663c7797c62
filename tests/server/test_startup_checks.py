"""`nitrotls serve` start-up: operator mistakes are exit 2 before the store or KMS is asked.

Each case once failed late or with the wrong exit code: a store path that is a file (exit 1),
a missing store directory (created by the reader, then "no bundle"), an undecided vsock mode
(found at bind time, after KMS released the key), ``raw_alpn`` outside tcp:// mode (silently
ignored) and one key spelled twice in ``nitrotls.toml`` (called "unknown").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import nitrotls.store
from nitrotls import config
from nitrotls.cli import cli
from nitrotls.config import ConfigError
from nitrotls.server.errors import ServerConfigError, StartupUnavailableError
from nitrotls.server.runtime import ServeOptions, Upstream
from nitrotls.store import StoreSpecError
from nitrotls.transport import vsock
from nitrotls.transport.address import Address

PCRS = '{"PCR0": "' + "11" * 48 + '", "PCR1": "' + "22" * 48 + '", "PCR2": "' + "33" * 48 + '"}'


@pytest.fixture
def pcrs(tmp_path: Path) -> Path:
    path = tmp_path / "pcrs.json"
    path.write_text(PCRS)
    return path


@pytest.fixture
def no_store(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Fail the test if serve opens a store: the check under test must come first."""
    opened: list[str | None] = []

    def refuse(spec: str | None, **_: Any) -> Any:
        opened.append(spec)
        raise AssertionError(f"the store {spec!r} was opened before the configuration check")

    monkeypatch.setattr(nitrotls.store, "open_store", refuse)
    return opened


def serve(image: Path, pcrs: Path, *args: str) -> BaseException | None:
    result = CliRunner().invoke(
        cli,
        [
            "--enclave", f"simulated:{image}", "serve", "--name", "n",
            "--generator-pcrs", str(pcrs), "--kms-endpoint", "http://127.0.0.1:9", *args,
        ],
    )  # fmt: skip
    return result.exception


def exit_code(error: BaseException | None) -> int | None:
    return getattr(error, "exit_code", None)


# -- 1. a store path that is a file ---------------------------------------------------------


def test_store_path_that_is_a_regular_file_exits_2(image: Path, pcrs: Path, tmp_path: Path) -> None:
    store_file = tmp_path / "store"
    store_file.write_text("not a store\n")
    error = serve(image, pcrs, "--upstream", "http://127.0.0.1:9", "--store", f"dir:{store_file}")
    assert isinstance(error, StoreSpecError) and exit_code(error) == 2, repr(error)
    assert str(store_file) in str(error) and "regular file" in str(error)
    assert store_file.read_text() == "not a store\n"


def test_store_path_below_a_file_names_the_file(image: Path, pcrs: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "plain"
    blocker.write_text("x")
    error = serve(
        image, pcrs, "--upstream", "http://127.0.0.1:9", "--store", f"dir:{blocker}/store"
    )
    assert isinstance(error, StoreSpecError) and exit_code(error) == 2, repr(error)
    assert f"{blocker} is not a directory" in str(error)


def test_store_path_is_checked_before_the_pcr_files_are_read(image: Path, tmp_path: Path) -> None:
    store_file = tmp_path / "store"
    store_file.write_text("")
    unreadable_pcrs = tmp_path / "missing-pcrs.json"  # would fail too, but later
    error = serve(
        image, unreadable_pcrs, "--upstream", "http://127.0.0.1:9", "--store", f"dir:{store_file}"
    )
    assert isinstance(error, StoreSpecError), repr(error)


# -- 2. a missing store directory -----------------------------------------------------------


def test_missing_store_is_an_outage_and_is_not_created(
    image: Path, pcrs: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "not" / "yet" / "store"
    error = serve(
        image, pcrs, "--upstream", "http://127.0.0.1:9", "--store", f"dir:{missing}",
        "--start-attempts", "1",
    )  # fmt: skip
    assert isinstance(error, StartupUnavailableError) and exit_code(error) == 75, repr(error)
    assert str(missing) in str(error) and "does not exist" in str(error)
    assert not (tmp_path / "not").exists()


def test_default_store_is_not_created_by_serve(
    image: Path, pcrs: Path, nitrotls_home: Path
) -> None:
    error = serve(image, pcrs, "--upstream", "http://127.0.0.1:9", "--start-attempts", "1")
    assert isinstance(error, StartupUnavailableError) and exit_code(error) == 75, repr(error)
    assert str(nitrotls_home / "store") in str(error)
    assert not (nitrotls_home / "store").exists()


# -- 3. listen address and vsock mode before the store --------------------------------------


def test_undecided_vsock_mode_exits_2_before_the_store(
    image: Path, pcrs: Path, monkeypatch: pytest.MonkeyPatch, no_store: list[str | None]
) -> None:
    monkeypatch.setenv(vsock.ENV_VAR, "sometimes")
    error = serve(image, pcrs, "--upstream", "http://127.0.0.1:9", "--listen", "vsock://16:8443")
    assert isinstance(error, ServerConfigError) and exit_code(error) == 2, repr(error)
    assert "--listen vsock://16:8443" in str(error) and vsock.ENV_VAR in str(error)
    assert no_store == []


def test_too_long_vsock_development_path_exits_2_before_the_store(
    image: Path,
    pcrs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_store: list[str | None],
) -> None:
    monkeypatch.setenv("NITROTLS_HOME", str(tmp_path / ("h" * 120)))
    error = serve(image, pcrs, "--upstream", "http://127.0.0.1:9", "--listen", "vsock://16:8443")
    assert isinstance(error, ServerConfigError) and exit_code(error) == 2, repr(error)
    assert "NITROTLS_HOME" in str(error)


@pytest.mark.parametrize("listen", ["tcp//127.0.0.1:8443", "tcp://127.0.0.1:70000", "udp://x:1"])
def test_listen_typo_exits_2_before_the_store(
    image: Path, pcrs: Path, listen: str, no_store: list[str | None]
) -> None:
    error = serve(image, pcrs, "--upstream", "http://127.0.0.1:9", "--listen", listen)
    assert isinstance(error, ServerConfigError) and exit_code(error) == 2, repr(error)
    assert no_store == []


# -- 4. raw_alpn outside tcp:// mode --------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "named"),
    [
        (("--upstream", "http://127.0.0.1:9"), "reverse-proxy mode"),
        (("--app", "no_such_module:app"), "ASGI mode"),
    ],
)
def test_alpn_outside_tcp_mode_exits_2(
    image: Path, pcrs: Path, mode: tuple[str, str], named: str, no_store: list[str | None]
) -> None:
    error = serve(image, pcrs, *mode, "--alpn", "h2")
    assert isinstance(error, ServerConfigError) and exit_code(error) == 2, repr(error)
    assert "raw TCP mode (--upstream tcp://HOST:PORT)" in str(error)
    assert named in str(error) and "h2" in str(error)
    assert no_store == []


def test_raw_alpn_from_the_config_file_in_http_mode_exits_2(
    image: Path, pcrs: Path, tmp_path: Path, no_store: list[str | None]
) -> None:
    toml = tmp_path / "nitrotls.toml"
    toml.write_text('[server]\nupstream = "http://127.0.0.1:9"\nraw-alpn = ["h2"]\n')
    error = serve(image, pcrs, "--config", str(toml))
    assert isinstance(error, ServerConfigError) and "raw_alpn" in str(error), repr(error)


def test_raw_alpn_is_offered_in_tcp_mode() -> None:
    listen = Address.parse("tcp://127.0.0.1:0")
    options = ServeOptions(listen, upstream=Upstream.parse("tcp://127.0.0.1:9"), raw_alpn=("h2",))
    assert options.alpn == ("nitrotls-attest/1", "h2")
    with pytest.raises(ServerConfigError, match="reverse-proxy mode"):
        ServeOptions(listen, upstream=Upstream.parse("http://127.0.0.1:9"), raw_alpn=("h2",))
    with pytest.raises(ServerConfigError, match="ASGI mode"):
        ServeOptions(listen, app="m:a", raw_alpn=("h2",))


# -- 5. one key in both spellings -----------------------------------------------------------


def test_key_in_both_spellings_is_named_twice() -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse("[server]\nheader-timeout = 5\nheader_timeout = 6\n")
    message = str(caught.value)
    assert "twice" in message and "'header-timeout'" in message and "'header_timeout'" in message
    assert "unknown" not in message and caught.value.exit_code == 2


def test_unknown_key_in_both_spellings_is_still_unknown() -> None:
    with pytest.raises(ConfigError, match="unknown key 'no-such'"):
        config.parse("[server]\nno-such = 1\nno_such = 2\n")


def test_key_in_both_spellings_from_serve_exits_2(
    image: Path, pcrs: Path, tmp_path: Path, no_store: list[str | None]
) -> None:
    toml = tmp_path / "nitrotls.toml"
    toml.write_text("[server]\nheader-timeout = 5.0\nheader_timeout = 6.0\n")
    error = serve(image, pcrs, "--upstream", "http://127.0.0.1:9", "--config", str(toml))
    assert isinstance(error, ConfigError) and exit_code(error) == 2, repr(error)
    assert "twice" in str(error)


# -- 6. a KMS that accepts and never answers --------------------------------------------------


def test_serve_gives_a_silent_kms_a_bounded_number_of_short_tries(
    image: Path, pcrs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client serve builds gives up after SERVE_KMS_ATTEMPTS reads of at most
    SERVE_KMS_READ_TIMEOUT each (patched small here); start-up and reloads retry around it.
    With the client's own defaults one start attempt could take 5 x 30 s."""
    import socket
    import threading

    from nitrotls.kms import KMSUnavailableError
    from nitrotls.nsm import SimulatedNSM
    from nitrotls.server import app
    from nitrotls.server.config import ServerSection

    monkeypatch.setattr(app, "SERVE_KMS_READ_TIMEOUT", 0.3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")  # signing needs some; nobody checks them
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    silent = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(
        target=lambda: [accepted.append(silent.accept()[0]) for _ in range(5)], daemon=True
    ).start()
    backends = app.Backends(
        store_spec=f"dir:{tmp_path}", kms_endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}"
    )
    section = ServerSection(bundle="n", generator_pcrs=(pcrs,))
    source = app.bundle_source(section, backends, SimulatedNSM(image), ("http/1.1",))
    try:
        with pytest.raises(KMSUnavailableError):
            source.kms.decrypt(b"blob", {"k": "v"}, SimulatedNSM(image))
        assert len(accepted) == app.SERVE_KMS_ATTEMPTS == 2
    finally:
        silent.close()
        for conn in accepted:
            conn.close()
