"""Choosing the enclave identity: ``--enclave device|simulated:IMAGE[:debug]``.

Order: an explicit spec (the caller's, or the CLI's global ``--enclave`` via
:func:`set_enclave`), then ``$NITROTLS_ENCLAVE``, then the NSM device when it exists. Without
any of them nitrotls stops and says how to choose: it never falls back to simulation, because a
simulated document must never stand in for a real one unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nitrotls.nsm.device import DEVICE_PATH, DeviceNSM
from nitrotls.nsm.errors import EnclaveSelectionError
from nitrotls.nsm.simulated import SimulatedNSM
from nitrotls.nsm.source import AttestationSource

if TYPE_CHECKING:
    from nitrotls.attestation import Verifier

ENV_VAR = "NITROTLS_ENCLAVE"
_SIMULATED = "simulated:"
_DEBUG = ":debug"
_override: str | None = None


@dataclass(frozen=True)
class EnclaveSpec:
    """A parsed ``--enclave`` value."""

    kind: str  # "device" or "simulated"
    image: Path | None = None
    debug: bool = False


def set_enclave(spec: str | None) -> None:
    """Pin the enclave spec for this process (the CLI's global ``--enclave``)."""
    global _override
    if spec:
        parse_enclave_spec(spec, "--enclave")  # refuse a bad spec when it is given
    _override = spec or None


def parse_enclave_spec(spec: str, origin: str = "--enclave") -> EnclaveSpec:
    """``device`` | ``simulated:IMAGE`` | ``simulated:IMAGE:debug`` (IMAGE may contain ':')."""
    text = spec.strip()
    if text == "device":
        return EnclaveSpec("device")
    if text.startswith(_SIMULATED):
        image = text[len(_SIMULATED) :]
        debug = image.endswith(_DEBUG)
        if debug:
            image = image[: -len(_DEBUG)]
        if image:
            return EnclaveSpec("simulated", Path(image).expanduser(), debug)
    raise EnclaveSelectionError(
        f"{origin} must be 'device', 'simulated:IMAGE' or 'simulated:IMAGE:debug', got {spec!r}"
    )


def enclave_from_spec(
    spec: str | None,
    *,
    device_path: Path | str = DEVICE_PATH,
    environ: Mapping[str, str] | None = None,
) -> AttestationSource:
    """The attestation source the user chose (see the module docstring for the order)."""
    origin = "--enclave"
    chosen = spec or _override
    if not chosen:
        chosen = (os.environ if environ is None else environ).get(ENV_VAR, "").strip() or None
        origin = f"${ENV_VAR}"
    if chosen:
        return _build(parse_enclave_spec(chosen, origin), origin, device_path)
    if Path(device_path).exists():
        return DeviceNSM(device_path)
    raise EnclaveSelectionError(
        f"no enclave identity chosen and {device_path} does not exist (not inside a Nitro "
        "enclave). For development, pass --enclave simulated:IMAGE (or set "
        f"{ENV_VAR}=simulated:IMAGE): documents are then signed by the local dev root, which "
        "verifiers accept only with --dev. nitrotls never falls back to simulation by itself."
    )


def _build(chosen: EnclaveSpec, origin: str, device_path: Path | str) -> AttestationSource:
    if chosen.kind == "device":
        if not Path(device_path).exists():
            raise EnclaveSelectionError(
                f"{origin} asks for the NSM device but {device_path} does not exist; run inside "
                "a Nitro enclave, or use simulated:IMAGE for development"
            )
        return DeviceNSM(device_path)
    if chosen.image is None:  # parse_enclave_spec never returns this; fail closed anyway
        raise EnclaveSelectionError(f"{origin}: a simulated enclave needs an image")
    return SimulatedNSM(chosen.image, debug=chosen.debug)


def trusted_verifier(trust_dev_root: bool) -> Verifier:
    """A verifier trusting the AWS Nitro root, plus this data directory's dev root when asked."""
    from nitrotls.attestation import AWS_NITRO_ROOT_G1_SHA256, Verifier
    from nitrotls.nsm.devca import dev_root_fingerprint

    roots = [AWS_NITRO_ROOT_G1_SHA256]
    if trust_dev_root:
        roots.append(dev_root_fingerprint())
    return Verifier(trusted_roots=roots)
