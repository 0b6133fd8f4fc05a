"""TOFU owner pins and their persistence."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from overlay.identity import Ed25519PrivateKey
from overlay.naming import CorruptState, OwnerChanged, OwnerPins, make_release, make_transfer
from overlay.naming.store import load_pins, save_pins
from tests.naming.helpers import NOW, nonce_for, owner_of, record


def test_first_use_pins_and_a_change_is_an_error(
    alice: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    pins = OwnerPins()
    first = record(alice, expires=NOW + 600)
    pins.observe(first, NOW)
    pin = pins.get("alice.ovl")
    assert pin is not None and pin.owner == owner_of(alice) and pin.pinned_until == first.expires
    with pytest.raises(OwnerChanged) as info:
        pins.observe(record(mallory), NOW + 10)
    assert info.value.pinned_owner == owner_of(alice)
    assert info.value.new_owner == owner_of(mallory)
    assert info.value.pinned_until == first.expires
    # The failed observation did not move the pin.
    assert pins.get("alice.ovl") == pin


def test_same_owner_extends_the_pin(alice: Ed25519PrivateKey) -> None:
    pins = OwnerPins()
    pins.observe(record(alice, expires=NOW + 600), NOW)
    pins.observe(record(alice, sequence=2, expires=NOW + 900), NOW + 1)
    pins.observe(record(alice, sequence=3, expires=NOW + 700), NOW + 2)
    pin = pins.get("alice.ovl")
    assert pin is not None and pin.pinned_until == int(NOW + 900)


def test_change_after_expiry_is_accepted(
    alice: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    pins = OwnerPins()
    pins.observe(record(alice, expires=NOW + 600), NOW)
    later = NOW + 600
    pins.observe(record(mallory, expires=later + 600), later)
    pin = pins.get("alice.ovl")
    assert pin is not None and pin.owner == owner_of(mallory)


def test_transfer_moves_the_pin(
    alice: Ed25519PrivateKey, bob: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    nonce = nonce_for("alice.ovl", alice)
    transfer = make_transfer(
        alice, "alice.ovl", bob.public_key(), sequence=9, expires=int(NOW + 900), pow_nonce=nonce
    )
    # Seen through a record carrying the proof:
    pins = OwnerPins()
    pins.observe(record(alice), NOW)
    pins.observe(record(bob, pow_nonce=0, transfer_proof=transfer.to_bytes()), NOW)
    assert pins.get("alice.ovl").owner == owner_of(bob)  # type: ignore[union-attr]
    # Seen through the TRANSFER record itself, then Bob's plain record:
    pins = OwnerPins()
    pins.observe(record(alice), NOW)
    pins.observe(transfer, NOW)
    pins.observe(record(bob), NOW)
    assert pins.get("alice.ovl").owner == owner_of(bob)  # type: ignore[union-attr]
    with pytest.raises(OwnerChanged):
        pins.check(record(mallory), NOW)


def test_release_drops_the_pin(alice: Ed25519PrivateKey, bob: Ed25519PrivateKey) -> None:
    pins = OwnerPins()
    pins.observe(record(alice), NOW)
    nonce = nonce_for("alice.ovl", alice)
    release = make_release(alice, "alice.ovl", sequence=9, expires=int(NOW + 60), pow_nonce=nonce)
    pins.observe(release, NOW)
    assert pins.get("alice.ovl") is None
    pins.observe(record(bob), NOW)
    assert pins.get("alice.ovl").owner == owner_of(bob)  # type: ignore[union-attr]


def test_size_is_bounded(alice: Ed25519PrivateKey) -> None:
    pins = OwnerPins(max_entries=3)
    for i in range(5):
        pins.observe(record(alice, name=f"n{i}.ovl", expires=NOW + 100 + i), NOW)
    assert len(pins) == 3
    # The pins nearest to expiry went first.
    assert list(pins) == ["n2.ovl", "n3.ovl", "n4.ovl"]


def test_persistence_roundtrip(
    tmp_path: Path, alice: Ed25519PrivateKey, mallory: Ed25519PrivateKey
) -> None:
    pins = OwnerPins()
    pins.observe(record(alice, name="alice.ovl"), NOW)
    pins.observe(record(mallory, name="mallory.ovl"), NOW)
    path = tmp_path / "state" / "pins.json"
    save_pins(path, pins)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = load_pins(path)
    assert list(loaded) == ["alice.ovl", "mallory.ovl"]
    assert loaded.get("alice.ovl") == pins.get("alice.ovl")
    # The reloaded pins still protect: a restart does not re-open TOFU.
    with pytest.raises(OwnerChanged):
        loaded.check(record(mallory, name="alice.ovl"), NOW)
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and doc["format"] == "overlay-name-pins"


def test_missing_file_is_empty_and_corrupt_file_is_an_error(tmp_path: Path) -> None:
    assert len(load_pins(tmp_path / "absent.json")) == 0
    bad = tmp_path / "bad.json"
    for content in (
        b"{not json",
        b"[]",
        b'{"format": "overlay-name-pins", "version": 99, "pins": {}}',
        b'{"format": "something-else", "version": 1, "pins": {}}',
        b'{"format": "overlay-name-pins", "version": 1, "pins": {"a.ovl": {"owner": "!!"}}}',
        b'{"format": "overlay-name-pins", "version": 1,'
        b' "pins": {"a.ovl": {"owner": "", "pinned_until": "x"}}}',
    ):
        bad.write_bytes(content)
        with pytest.raises(CorruptState):
            load_pins(bad)
