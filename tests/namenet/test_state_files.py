"""Persistence of owned names and resolver state: versioned, checked, private."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from overlay.naming import CorruptState, NamingConfig
from overlay.naming.owned import OWNED_FILE, OwnedName, load_owned, save_owned
from overlay.naming.resource_map_store import CACHE_FILE, PINS_FILE, ResolverState
from tests.naming.helpers import BITS, key, record
from tests.waiting import wait_until

NAMING = NamingConfig(pow_bits=BITS)


def test_owned_names_round_trip(tmp_path: Path) -> None:
    alice = key(1)
    rec = record(alice, expires=time.time() + 3600)
    path = tmp_path / OWNED_FILE
    save_owned(path, {"alice.ovl": OwnedName(rec, True, 10.0, 20.0, 3)})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_owned(path, alice.public_key().to_protobuf(), NAMING)
    assert loaded == {"alice.ovl": OwnedName(rec, True, 10.0, 20.0, 3)}
    assert load_owned(tmp_path / "missing.json", b"", NAMING) == {}


@pytest.mark.parametrize("mutate", [
    lambda doc: doc.update(version=2),
    lambda doc: doc.update(format="other"),
    lambda doc: doc["names"]["alice.ovl"].update(record="!!!"),
    lambda doc: doc["names"]["alice.ovl"].update(republish_at="soon"),
    lambda doc: doc["names"].update({"bob.ovl": doc["names"]["alice.ovl"]}),
])
def test_owned_names_refuse_bad_files(tmp_path: Path, mutate: object) -> None:
    alice = key(1)
    path = tmp_path / OWNED_FILE
    save_owned(path, {"alice.ovl": OwnedName(record(alice), False, 1.0, 2.0)})
    doc = json.loads(path.read_text())
    mutate(doc)  # type: ignore[operator]
    path.write_text(json.dumps(doc))
    with pytest.raises(CorruptState):
        load_owned(path, alice.public_key().to_protobuf(), NAMING)


def test_owned_names_refuse_another_owners_record(tmp_path: Path) -> None:
    path = tmp_path / OWNED_FILE
    save_owned(path, {"alice.ovl": OwnedName(record(key(1)), False, 1.0, 2.0)})
    with pytest.raises(CorruptState, match="not ours"):
        load_owned(path, key(2).public_key().to_protobuf(), NAMING)
    path.write_bytes(b"\xff\xfe not json")
    with pytest.raises(CorruptState):
        load_owned(path, key(1).public_key().to_protobuf(), NAMING)


def test_resolver_state_moves_a_corrupt_cache_aside_but_refuses_corrupt_pins(
        tmp_path: Path) -> None:
    now = time.time()
    state = ResolverState(tmp_path, NAMING)
    rec = record(key(1), expires=now + 3600)
    state.cache.put(rec, now)
    state.pins.observe(rec, now)
    assert not state.flush()  # nothing marked dirty yet
    state.mark_dirty()
    assert state.flush() and state.flushes == 1
    again = ResolverState(tmp_path, NAMING)
    again.load(now)
    assert len(again.cache) == 1 and again.pins.get("alice.ovl") is not None

    (tmp_path / CACHE_FILE).write_text("{broken")
    third = ResolverState(tmp_path, NAMING)
    third.load(now)
    assert len(third.cache) == 0 and third.pins.get("alice.ovl") is not None
    assert (tmp_path / (CACHE_FILE + ".corrupt")).exists()

    (tmp_path / PINS_FILE).write_text("[]")
    with pytest.raises(CorruptState):
        ResolverState(tmp_path, NAMING).load(now)
    os.remove(tmp_path / PINS_FILE)


async def test_a_full_disk_is_retried_by_the_writer_and_never_raises(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The naming flusher used to write on the loop; ENOSPC ended the daemon."""
    from overlay.naming import resource_map_store
    from overlay.statefile import StateWriteFailed, StateWriter

    now = time.time()
    state = ResolverState(tmp_path, NAMING)
    real = resource_map_store.write_json
    full = [True]

    def write(path: object, doc: object) -> None:
        if full[0]:
            raise OSError(28, "No space left on device")
        real(path, doc)  # type: ignore[arg-type]

    monkeypatch.setattr(resource_map_store, "write_json", write)
    async with StateWriter(state, "resource map", interval=0.01, max_backoff=0.02) as writer:
        state.on_dirty = writer.mark_dirty
        state.cache.put(record(key(1), expires=now + 3600), now)
        state.mark_dirty()
        with pytest.raises(StateWriteFailed):
            await writer.flush()
        # Retried in the background: each attempt sets ``attempted``.
        await wait_until(lambda: writer.failures >= 2, writer.attempted, timeout=10)
        full[0] = False
        state.mark_dirty()
        await writer.flush()
    again = ResolverState(tmp_path, NAMING)
    again.load(now)
    assert len(again.cache) == 1
