"""nitrotls.nsm: where attestation documents come from.

* :class:`AttestationSource` — the protocol every producer keeps (attest, PCRs, randomness).
* :class:`DeviceNSM` — ``/dev/nsm`` inside a Nitro enclave (ioctl + NSM API CBOR).
* :class:`SimulatedNSM` — documents in the exact AWS shape, signed by a dev root kept under
  ``data_dir()/nsm/``; PCR0/1/2 from :func:`measure_image`, PCR4 from the instance id, PCR8
  from an optional signing certificate.
* :func:`enclave_from_spec` / :func:`set_enclave` — ``--enclave device|simulated:IMAGE[:debug]``.
* :func:`dev_root_fingerprint`, :func:`trusted_verifier` — trusting the dev root only on request.
"""

from nitrotls.nsm.devca import dev_root_certificate, dev_root_fingerprint
from nitrotls.nsm.device import DEVICE_PATH, DeviceNSM
from nitrotls.nsm.errors import (
    DevCAError,
    EnclaveSelectionError,
    ImageError,
    NSMArgumentError,
    NSMDeviceError,
    NSMError,
    NSMInputTooLargeError,
    PCRIndexError,
    PCRLockedError,
)
from nitrotls.nsm.files import write_atomic
from nitrotls.nsm.image import measure_image, measure_signing_cert
from nitrotls.nsm.pcr import instance_pcr
from nitrotls.nsm.select import (
    EnclaveSpec,
    enclave_from_spec,
    parse_enclave_spec,
    set_enclave,
    trusted_verifier,
)
from nitrotls.nsm.simulated import DEFAULT_INSTANCE_ID, SIMULATED_MODULE_PREFIX, SimulatedNSM
from nitrotls.nsm.source import MAX_FIELD_BYTES, AttestationSource, NSMDescription

__all__ = [
    "DEFAULT_INSTANCE_ID",
    "DEVICE_PATH",
    "MAX_FIELD_BYTES",
    "SIMULATED_MODULE_PREFIX",
    "AttestationSource",
    "DevCAError",
    "DeviceNSM",
    "EnclaveSelectionError",
    "EnclaveSpec",
    "ImageError",
    "NSMArgumentError",
    "NSMDescription",
    "NSMDeviceError",
    "NSMError",
    "NSMInputTooLargeError",
    "PCRIndexError",
    "PCRLockedError",
    "SimulatedNSM",
    "dev_root_certificate",
    "dev_root_fingerprint",
    "enclave_from_spec",
    "instance_pcr",
    "measure_image",
    "measure_signing_cert",
    "parse_enclave_spec",
    "set_enclave",
    "trusted_verifier",
    "write_atomic",
]
