"""Policy: fail closed, PCR alternatives, debug, age, nonce, user_data, module and PCR4 pins."""

from __future__ import annotations

import datetime as dt

import pytest

from attestation.attestation_vectors import Vector
from nitrotls.attestation import (
    DebugEnclaveError,
    DocumentTooOldError,
    ModuleMismatchError,
    NonceMismatchError,
    PCRMismatchError,
    Policy,
    PolicyError,
    UserDataMismatchError,
    Verifier,
)
from nitrotls.errors import NitroTLSError


def _pcrs(vector: Vector, *indices: int) -> dict[int, bytes]:
    return {i: vector.document.pcrs[i] for i in indices}


def test_policy_without_measurement_is_refused() -> None:
    with pytest.raises(PolicyError, match="allow_any_measurement"):
        Policy()
    with pytest.raises(PolicyError):
        Policy(nonce=b"n" * 16, module_id="i-1", pcr4=bytes(48))
    assert not Policy(allow_any_measurement=True).checks_measurement


@pytest.mark.parametrize(
    "accepted",
    [({},), ({32: bytes(48)},), ({0: bytes(47)},), ({0: "00" * 48},), ({"0": bytes(48)},)],
)
def test_malformed_pcr_sets_are_refused(accepted) -> None:
    with pytest.raises(PolicyError):
        Policy(accepted_pcrs=accepted)


def test_other_malformed_policies_are_refused() -> None:
    with pytest.raises(PolicyError, match="max_age"):
        Policy(allow_any_measurement=True, max_age=dt.timedelta(seconds=-1))
    with pytest.raises(PolicyError, match="pcr4"):
        Policy(allow_any_measurement=True, pcr4=b"short")


def test_policy_sets_are_copied_and_read_only(production: Vector) -> None:
    pcrs = _pcrs(production, 0, 1, 2)
    policy = Policy(accepted_pcrs=[pcrs])  # type: ignore[arg-type]
    pcrs[0] = bytes(48)  # the caller's later edit does not change the policy
    policy.check(production.document, production.at)
    with pytest.raises(TypeError):
        policy.accepted_pcrs[0][0] = bytes(48)  # type: ignore[index]


def test_any_accepted_set_matching_accepts(production: Vector, vectors: list[Vector]) -> None:
    other = next(v for v in vectors if v.entry["pcr0"] != production.entry["pcr0"])
    policy = Policy(accepted_pcrs=(_pcrs(other, 0, 1, 2), _pcrs(production, 0, 1, 2)))
    policy.check(production.document, production.at)
    assert policy.matched_set(production.document) == 1
    assert policy.matched_set(other.document) == 0


def test_no_set_matching_names_expected_and_found(production: Vector, vectors) -> None:
    other = next(v for v in vectors if v.entry["pcr0"] != production.entry["pcr0"])
    policy = Policy(accepted_pcrs=(_pcrs(other, 0, 1, 2), {8: bytes([1]) * 48}))
    with pytest.raises(PCRMismatchError) as caught:
        policy.check(production.document, production.at)
    message = str(caught.value)
    assert "none of the 2 accepted" in message
    assert f"expected {other.entry['pcr0'][:32]}" in message
    assert f"found {production.entry['pcr0'][:32]}" in message
    assert "PCR8" in message


def test_pcr_missing_from_document_is_a_mismatch(production: Vector) -> None:
    policy = Policy(accepted_pcrs=({20: bytes(48)},))
    with pytest.raises(PCRMismatchError, match="found none"):
        policy.check(production.document, production.at)


def test_real_document_verifies_with_its_own_measurements(production: Vector) -> None:
    policy = Policy(accepted_pcrs=(_pcrs(production, 0, 1, 2, 8),))
    Verifier().verify(production.data, policy, at=production.at)


def test_debug_refused_by_default_even_when_pcrs_match(debug_vector: Vector) -> None:
    pcrs = _pcrs(debug_vector, 0, 1, 2)
    with pytest.raises(DebugEnclaveError, match="debug"):
        Policy(accepted_pcrs=(pcrs,)).check(debug_vector.document, debug_vector.at)
    Policy(accepted_pcrs=(pcrs,), allow_debug=True).check(debug_vector.document, debug_vector.at)


def test_max_age_is_relative_to_the_instant(production: Vector) -> None:
    policy = Policy(allow_any_measurement=True, max_age=dt.timedelta(minutes=5))
    policy.check(production.document, production.at + dt.timedelta(minutes=5))
    with pytest.raises(DocumentTooOldError, match="at most 0:05:00 old"):
        policy.check(production.document, production.at + dt.timedelta(minutes=5, seconds=1))


def test_documents_from_the_future_are_refused_when_age_matters(production: Vector) -> None:
    policy = Policy(allow_any_measurement=True, max_age=dt.timedelta(minutes=5))
    policy.check(production.document, production.at - dt.timedelta(minutes=4))
    with pytest.raises(DocumentTooOldError, match="signed before"):
        policy.check(production.document, production.at - dt.timedelta(minutes=6))


def test_nonce_must_match_exactly(vectors: list[Vector]) -> None:
    vector = next(v for v in vectors if v.entry["nonce_len"] and not v.entry["debug_mode"])
    nonce = vector.document.nonce
    assert nonce
    Policy(allow_any_measurement=True, nonce=nonce).check(vector.document, vector.at)
    for wrong in (nonce[:-1], nonce + b"\x00", bytes(len(nonce))):
        with pytest.raises(NonceMismatchError, match="expected"):
            Policy(allow_any_measurement=True, nonce=wrong).check(vector.document, vector.at)


def test_missing_nonce_is_a_mismatch(production: Vector) -> None:
    assert production.document.nonce is None
    with pytest.raises(NonceMismatchError, match="found none"):
        Policy(allow_any_measurement=True, nonce=b"n" * 16).check(
            production.document, production.at
        )


def test_user_data_bytes_or_predicate(production: Vector) -> None:
    user_data = production.document.user_data
    assert user_data
    doc, at = production.document, production.at
    Policy(allow_any_measurement=True, user_data=user_data).check(doc, at)
    Policy(allow_any_measurement=True, user_data=lambda found: found == user_data).check(doc, at)
    with pytest.raises(UserDataMismatchError):
        Policy(allow_any_measurement=True, user_data=b"other").check(doc, at)
    with pytest.raises(UserDataMismatchError):
        Policy(allow_any_measurement=True, user_data=lambda found: False).check(doc, at)


def test_user_data_predicate_must_say_true(production: Vector) -> None:
    truthy = Policy(allow_any_measurement=True, user_data=lambda found: 1)  # type: ignore[arg-type, return-value]
    with pytest.raises(UserDataMismatchError):
        truthy.check(production.document, production.at)


def test_user_data_predicate_errors(production: Vector) -> None:
    def broken(found: bytes | None) -> bool:
        raise KeyError("t")

    with pytest.raises(UserDataMismatchError, match="KeyError"):
        Policy(allow_any_measurement=True, user_data=broken).check(
            production.document, production.at
        )

    class SpecificError(NitroTLSError):
        pass

    def typed(found: bytes | None) -> bool:
        raise SpecificError("binding tag unknown")

    with pytest.raises(SpecificError):
        Policy(allow_any_measurement=True, user_data=typed).check(
            production.document, production.at
        )


def test_module_id_and_pcr4_pins(production: Vector) -> None:
    doc, at = production.document, production.at
    Policy(allow_any_measurement=True, module_id=doc.module_id, pcr4=doc.pcrs[4]).check(doc, at)
    with pytest.raises(ModuleMismatchError, match="module_id"):
        Policy(allow_any_measurement=True, module_id="i-0other-enc0").check(doc, at)
    with pytest.raises(PCRMismatchError, match="PCR4"):
        Policy(allow_any_measurement=True, pcr4=bytes(48)).check(doc, at)
