"""--enclave / $NITROTLS_ENCLAVE / device detection; never a silent fallback to simulation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nitrotls.nsm import (
    DeviceNSM,
    EnclaveSelectionError,
    ImageError,
    SimulatedNSM,
    enclave_from_spec,
    parse_enclave_spec,
    set_enclave,
)
from nitrotls.nsm.select import ENV_VAR


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ENV_VAR, raising=False)
    set_enclave(None)
    yield
    set_enclave(None)


@pytest.fixture
def device_path(tmp_path: Path) -> Path:
    path = tmp_path / "dev-nsm"
    path.write_bytes(b"")
    return path


def test_simulated_spec(image_dir: Path, tmp_path: Path) -> None:
    source = enclave_from_spec(f"simulated:{image_dir}", device_path=tmp_path / "none")
    assert isinstance(source, SimulatedNSM)
    assert not source.debug and source.image == image_dir
    debug = enclave_from_spec(f"simulated:{image_dir}:debug", device_path=tmp_path / "none")
    assert isinstance(debug, SimulatedNSM) and debug.debug


def test_image_path_may_contain_colons(tmp_path: Path) -> None:
    odd = tmp_path / "a:b"
    odd.write_bytes(b"x")
    spec = parse_enclave_spec(f"simulated:{odd}:debug")
    assert spec.image == odd and spec.debug


def test_device_spec_and_autodetection(device_path: Path) -> None:
    assert isinstance(enclave_from_spec("device", device_path=device_path), DeviceNSM)
    auto = enclave_from_spec(None, device_path=device_path, environ={})
    assert isinstance(auto, DeviceNSM) and auto.path == device_path


def test_device_spec_without_device_explains(tmp_path: Path) -> None:
    with pytest.raises(EnclaveSelectionError, match="does not exist"):
        enclave_from_spec("device", device_path=tmp_path / "none")


def test_no_choice_and_no_device_never_falls_back(tmp_path: Path) -> None:
    with pytest.raises(EnclaveSelectionError) as raised:
        enclave_from_spec(None, device_path=tmp_path / "none", environ={})
    message = str(raised.value)
    assert "--enclave simulated:IMAGE" in message and "never falls back" in message


def test_environment_variable_is_used_and_explicit_spec_wins(
    image_dir: Path, device_path: Path, image_file: Path
) -> None:
    environ = {ENV_VAR: f"simulated:{image_dir}"}
    from_env = enclave_from_spec(None, device_path=device_path, environ=environ)
    assert isinstance(from_env, SimulatedNSM) and from_env.image == image_dir
    explicit = enclave_from_spec(
        f"simulated:{image_file}", device_path=device_path, environ=environ
    )
    assert isinstance(explicit, SimulatedNSM) and explicit.image == image_file
    assert isinstance(
        enclave_from_spec("device", device_path=device_path, environ=environ), DeviceNSM
    )


def test_process_override_beats_environment(
    image_dir: Path, image_file: Path, device_path: Path
) -> None:
    set_enclave(f"simulated:{image_file}")
    chosen = enclave_from_spec(None, device_path=device_path, environ={ENV_VAR: "device"})
    assert isinstance(chosen, SimulatedNSM) and chosen.image == image_file


@pytest.mark.parametrize("spec", ["simulated", "simulated:", "simulated::debug", "sim:x", "Device"])
def test_bad_specs_are_refused(spec: str, tmp_path: Path) -> None:
    with pytest.raises(EnclaveSelectionError, match="must be 'device'"):
        enclave_from_spec(spec, device_path=tmp_path / "none")
    with pytest.raises(EnclaveSelectionError):
        set_enclave(spec)


def test_bad_environment_value_names_its_origin(tmp_path: Path) -> None:
    with pytest.raises(EnclaveSelectionError, match=r"\$NITROTLS_ENCLAVE"):
        enclave_from_spec(None, device_path=tmp_path / "none", environ={ENV_VAR: "nope"})


def test_missing_image_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError):
        enclave_from_spec(f"simulated:{tmp_path / 'absent'}", device_path=tmp_path / "none")
