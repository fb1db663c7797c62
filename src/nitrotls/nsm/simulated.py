"""A simulated NSM: documents in the exact AWS shape, signed under a local dev root.

For development and tests on machines without Nitro hardware. Documents are untagged
COSE_Sign1/ES384 with AWS's payload layout; PCR0/1/2 measure an image the caller names, PCR4 the
(simulated) parent instance id as AWS computes it, PCR8 an optional EIF signing certificate.
The chain ends at the dev root under the data directory, which verifiers trust only when told
to (``trusted_verifier(True)`` / ``--dev``). The default instance id, ``i-00000000000000000``,
makes a simulated document's module_id start with ``i-0000000000``: no EC2 instance id looks
like that, so such documents say what they are even before their chain is checked.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nitrotls.nsm import devca
from nitrotls.nsm.cose import PayloadTemplate, sign1
from nitrotls.nsm.errors import NSMArgumentError
from nitrotls.nsm.image import measure_image, measure_signing_cert
from nitrotls.nsm.pcr import ZERO_PCR, PCRBank, instance_pcr
from nitrotls.nsm.protocol import encode_request, extend_pcr_request
from nitrotls.nsm.source import (
    PCR_COUNT,
    NSMDescription,
    check_bytes,
    check_index,
    check_random_length,
    optional_field,
)

DEFAULT_INSTANCE_ID = "i-00000000000000000"
SIMULATED_MODULE_PREFIX = "i-0000000000"
#: A leaf is replaced once less than this is left of its 3 hours, so every document stays
#: chain-valid for at least this long after it is issued (KMS accepts documents 5 minutes old).
LEAF_REFRESH_MARGIN = timedelta(minutes=10)
_INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Clock = Callable[[], datetime]


def check_instance_id(instance_id: str) -> str:
    """An EC2-style instance id: ``i-`` and 8 or 17 lowercase hex digits."""
    if not isinstance(instance_id, str) or not _INSTANCE_ID.fullmatch(instance_id):
        raise NSMArgumentError(
            f"instance id must look like an EC2 instance id (i- and 8 or 17 lowercase hex "
            f"digits), got {instance_id!r}"
        )
    return instance_id


def timestamp_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, as the document's ``timestamp`` carries it."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


class SimulatedNSM:
    """An :class:`~nitrotls.nsm.source.AttestationSource` backed by the dev CA. Thread-safe.

    ``attest()`` does no disk I/O: the enclave's signing key and 3-hour certificate live in
    memory and are reused until :data:`LEAF_REFRESH_MARGIN` before they expire; only then is
    the persisted chain consulted (and rotated when needed).
    """

    def __init__(
        self,
        image: Path | str,
        *,
        debug: bool = False,
        instance_id: str | None = None,
        signing_cert: Path | str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.image = Path(image)
        self.debug = bool(debug)
        self.instance_id = check_instance_id(instance_id or DEFAULT_INSTANCE_ID)
        self._clock: Clock = clock or _utcnow
        self.image_pcrs = measure_image(self.image)
        self.signing_cert_pcr = (
            measure_signing_cert(signing_cert) if signing_cert is not None else None
        )
        self._bank = PCRBank(self._boot_pcrs())
        started = timestamp_ms(self._now())
        enclave = f"{started & 0xFFFF_FFFF_FFFF:012x}{secrets.token_hex(2)}"
        self.module_id = f"{self.instance_id}-enc{enclave}"
        self._lock = threading.Lock()
        self._leaf_lock = threading.Lock()
        self._leaf: devca.Leaf | None = None
        # The document bytes that change only with the leaf or the PCRs, encoded once for both.
        self._template: tuple[devca.Leaf, int, PayloadTemplate] | None = None
        self._pcr_epoch = 0

    @property
    def blocks(self) -> bool:
        """Whether the next attest() may wait on disk: only when the signing certificate is due
        for replacement (every few hours). Otherwise it is pure CPU under the GIL, and a server
        calls it on its event loop: a worker thread would add two thread switches and no
        parallelism."""
        leaf = self._leaf
        return leaf is None or not _usable(leaf, self._now())

    def _boot_pcrs(self) -> dict[int, bytes]:
        # Debug enclaves report zeros for the image measurements, PCR8 included (as real
        # debug-mode documents do); PCR3 (IAM role) is zero: the simulation has no role.
        pcrs = {index: ZERO_PCR for index in range(16)}
        if not self.debug:
            pcrs.update(self.image_pcrs)
            if self.signing_cert_pcr is not None:
                pcrs[8] = self.signing_cert_pcr
        pcrs[4] = instance_pcr(self.instance_id)
        return pcrs

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise NSMArgumentError("the simulated NSM's clock must return aware datetimes")
        return now.astimezone(UTC)

    def attest(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        """A fresh document; the optional fields are carried as given (null when unset)."""
        fields = (
            optional_field("public_key", public_key, minimum=1),
            optional_field("user_data", user_data),
            optional_field("nonce", nonce),
        )
        now = self._now()
        leaf = self._current_leaf(now)
        payload = self._template_for(leaf).encode(timestamp_ms(now), *fields)
        return sign1(leaf.key, payload)

    def _template_for(self, leaf: devca.Leaf) -> PayloadTemplate:
        cached = self._template
        if cached is not None and cached[0] is leaf and cached[1] == self._pcr_epoch:
            return cached[2]
        with self._lock:
            epoch, pcrs = self._pcr_epoch, self._bank.document_pcrs()
        template = PayloadTemplate(
            module_id=self.module_id, pcrs=pcrs, certificate=leaf.der, cabundle=leaf.cabundle
        )
        self._template = (leaf, epoch, template)
        return template

    def _current_leaf(self, now: datetime) -> devca.Leaf:
        leaf = self._leaf
        if leaf is not None and _usable(leaf, now):
            return leaf
        with self._leaf_lock:
            leaf = self._leaf
            if leaf is None or not _usable(leaf, now):
                chain = devca.chain_for(self.instance_id, now, now + devca.LEAF_LIFETIME)
                leaf = devca.issue_leaf(chain, self.module_id, now)
                self._leaf = leaf
            return leaf

    def describe_pcr(self, index: int) -> tuple[bool, bytes]:
        index = check_index(index)
        with self._lock:
            return self._bank.describe(index)

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        index = check_index(index)
        data = check_bytes("data", data)
        encode_request(extend_pcr_request(index, data))  # the device's 4096-byte request limit
        with self._lock:
            self._pcr_epoch += 1
            return self._bank.extend(index, data)

    def lock_pcr(self, index: int) -> None:
        index = check_index(index)
        with self._lock:
            self._pcr_epoch += 1
            self._bank.lock(index)

    def lock_pcrs(self, count: int) -> None:
        """Lock PCRs [0, count), like the NSM's LockPCRs."""
        count = check_index(count)
        with self._lock:
            self._pcr_epoch += 1
            self._bank.lock_range(count)

    def get_random(self, length: int) -> bytes:
        return secrets.token_bytes(check_random_length(length))

    def describe(self) -> NSMDescription:
        with self._lock:
            locked = self._bank.locked
        return NSMDescription(1, 0, 0, self.module_id, PCR_COUNT, locked, "SHA384")

    def __repr__(self) -> str:
        mode = ", debug" if self.debug else ""
        return f"SimulatedNSM({str(self.image)!r}{mode}, module_id={self.module_id!r})"


def _usable(leaf: devca.Leaf, now: datetime) -> bool:
    return leaf.not_before <= now and now + LEAF_REFRESH_MARGIN < leaf.not_after


def _utcnow() -> datetime:
    return datetime.now(UTC)
