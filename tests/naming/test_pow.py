from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.naming import PowNotFound, solve_pow, verify_pow
from overlay.naming.pow import (
    MAX_NONCE,
    PowStopped,
    default_pow_budget,
    leading_zero_bits,
    pow_digest,
)

OWNER = b"\x08\x01\x12\x20" + bytes(range(32))


def test_solved_nonce_verifies_and_reaches_the_difficulty() -> None:
    nonce = solve_pow("alice.ovl", OWNER, 10, random.Random(3))
    assert verify_pow("alice.ovl", OWNER, nonce, 10)
    assert leading_zero_bits(pow_digest("alice.ovl", OWNER, nonce)) >= 10


def test_solving_is_deterministic_given_the_start() -> None:
    first = solve_pow("alice.ovl", OWNER, 8, 12345)
    assert first >= 12345
    assert solve_pow("alice.ovl", OWNER, 8, 12345) == first
    # Every nonce between the start and the answer fails.
    assert not any(verify_pow("alice.ovl", OWNER, n, 8) for n in range(12345, first))


def test_proof_binds_name_and_owner() -> None:
    nonce = solve_pow("alice.ovl", OWNER, 12, 0)
    assert not verify_pow("alice.ovl", OWNER, nonce, 40)
    digest = pow_digest("alice.ovl", OWNER, nonce)
    assert pow_digest("alicf.ovl", OWNER, nonce) != digest
    assert pow_digest("alice.ovl", OWNER[:-1] + b"\x00", nonce) != digest
    # The first nonce at or after 0 for another name is a different one.
    assert solve_pow("bob.ovl", OWNER, 12, 0) != nonce


def test_length_prefixes_keep_fields_apart() -> None:
    # Moving a byte from the name to the owner changes the digest.
    assert pow_digest("ab.ovl", b"c", 1) != pow_digest("ab.ov", b"lc", 1)


def test_budget_is_enforced() -> None:
    with pytest.raises(PowNotFound):
        solve_pow("alice.ovl", OWNER, 64, 0, max_iterations=100)


def test_nonce_wraps_at_64_bits() -> None:
    nonce = solve_pow("alice.ovl", OWNER, 4, MAX_NONCE)
    assert 0 <= nonce <= MAX_NONCE
    assert verify_pow("alice.ovl", OWNER, nonce, 4)


def test_out_of_range_nonces_never_verify() -> None:
    assert not verify_pow("alice.ovl", OWNER, -1, 1)
    assert not verify_pow("alice.ovl", OWNER, MAX_NONCE + 1, 1)
    assert verify_pow("alice.ovl", OWNER, 7, 0)
    with pytest.raises(ValueError):
        solve_pow("alice.ovl", OWNER, 300, 0)


@given(st.binary(min_size=32, max_size=32))
def test_leading_zero_bits(digest: bytes) -> None:
    bits = leading_zero_bits(digest)
    assert int.from_bytes(digest, "big") < (1 << (256 - bits)) or bits == 0
    if bits < 256:
        assert int.from_bytes(digest, "big") >= 1 << (255 - bits)


def test_a_set_stop_event_ends_the_search_with_a_typed_error() -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(PowStopped, match="after 0 attempts"):
        solve_pow("alice.ovl", OWNER, 64, 0, stop=stop)
    # Not set: the search runs to its budget as before.
    with pytest.raises(PowNotFound) as budget:
        solve_pow("alice.ovl", OWNER, 64, 0, max_iterations=5000, stop=threading.Event())
    assert not isinstance(budget.value, PowStopped)


def test_the_default_budget_is_64_times_the_expected_work() -> None:
    assert default_pow_budget(20) == 64 << 20
    assert default_pow_budget(0) == 64
