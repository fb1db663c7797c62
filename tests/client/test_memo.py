"""Remembered derivations save parsing on warm connections and never change an answer."""

from __future__ import annotations

import cbor2
import pytest

from nitrotls import binding
from nitrotls.client.memo import Memo
from nitrotls.client.verdict import leaf_facts

from certs import make_ca, make_leaf


def test_memo_derives_once_per_exact_key_and_stays_bounded() -> None:
    calls: list[bytes] = []

    def derive(key: bytes) -> int:
        calls.append(key)
        return len(key)

    memo: Memo[bytes, int] = Memo(derive, limit=2)
    assert (memo(b"a"), memo(b"a"), memo(b"bb")) == (1, 1, 2)
    assert calls == [b"a", b"bb"]
    memo(b"ccc")  # evicts the oldest
    assert len(memo) == 2
    memo(b"a")
    assert calls == [b"a", b"bb", b"ccc", b"a"]


def test_memo_keeps_no_failure() -> None:
    attempts = 0

    def derive(key: bytes) -> int:
        nonlocal attempts
        attempts += 1
        raise ValueError("bad input")

    memo: Memo[bytes, int] = Memo(derive)
    for _ in range(2):
        with pytest.raises(ValueError):
            memo(b"x")
    assert attempts == 2 and len(memo) == 0


def test_leaf_facts_follow_the_exact_certificate() -> None:
    ca = make_ca()
    first, second = make_leaf(ca, ("a.test",)), make_leaf(ca, ("a.test",))
    for leaf in (first, second, first):
        assert leaf_facts(leaf.der).spki_sha384 == binding.spki_sha384(leaf.der)
    assert leaf_facts(first.der) != leaf_facts(second.der)
    assert "a.test" in leaf_facts(first.der).subject


def test_binding_decode_remembers_successes_only() -> None:
    good = binding.TLSBinding(binding.TLS_TAG, b"s" * 48, b"bundle").encode()
    assert (
        binding.decode(good)
        == binding.decode(good)
        == binding.TLSBinding(binding.TLS_TAG, b"s" * 48, b"bundle")
    )
    # The same map, not deterministically encoded (indefinite-length map): refused every time.
    loose = (
        b"\xbf"
        + b"".join(
            cbor2.dumps(k) + cbor2.dumps(v)
            for k, v in {"t": binding.TLS_TAG, "spki": b"s" * 48, "bundle": b"bundle"}.items()
        )
        + b"\xff"
    )
    for _ in range(2):
        with pytest.raises(binding.BindingError, match="deterministically"):
            binding.decode(loose)
    for empty in (None, b""):
        with pytest.raises(binding.BindingError, match="no user_data"):
            binding.decode(empty)
