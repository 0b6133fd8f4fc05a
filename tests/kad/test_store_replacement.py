"""How the record store decides that a PUT replaces the record it holds:
the namespace's clock-aware replacement policy if it has one, else its
selector; a held record that no longer validates never blocks."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from overlay.kad.errors import InvalidRecord, StaleRecord
from overlay.kad.records import NamespaceRegistry, Record, ReplacementPolicy, default_registry
from overlay.kad.store import MemoryRecordStore, StoreConfig

NOW = 1_800_000_000.0
KEY = b"/t/thing"


def _value(rank: int, until: float) -> bytes:
    return f"{rank}:{until}".encode()


def _parse(value: bytes) -> tuple[int, float]:
    rank, until = value.decode().split(":")
    return int(rank), float(until)


class Lapsing:
    """Values carry a rank and an end of validity; the higher rank wins."""

    def validate(self, key: bytes, value: bytes, now: float) -> None:
        if _parse(value)[1] <= now:
            raise InvalidRecord("lapsed")

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        ranks = [_parse(value)[0] for value in values]
        return ranks.index(max(ranks))


class Policed(Lapsing):
    """As ``Lapsing``, but replacement goes by a clock-aware policy that
    accepts only values with an even rank."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes, bytes, float]] = []

    def accept_replacement(self, key: bytes, existing: bytes, incoming: bytes, now: float) -> bool:
        self.calls.append((key, existing, incoming, now))
        return _parse(incoming)[0] % 2 == 0


def _store(validator: Lapsing) -> MemoryRecordStore:
    registry = default_registry()
    registry.register("t", validator)
    return MemoryRecordStore(StoreConfig(), registry)


def _held(store: MemoryRecordStore, now: float) -> bytes | None:
    stored = store.get(KEY, now)
    return None if stored is None else stored.record.value


def test_protocol_is_detected_by_method() -> None:
    assert isinstance(Policed(), ReplacementPolicy)
    assert not isinstance(Lapsing(), ReplacementPolicy)


def test_selector_decides_without_a_policy() -> None:
    store = _store(Lapsing())
    store.put(Record(KEY, _value(5, NOW + 100)), None, NOW)
    with pytest.raises(StaleRecord):
        store.put(Record(KEY, _value(4, NOW + 100)), None, NOW)
    store.put(Record(KEY, _value(6, NOW + 100)), None, NOW)
    assert _held(store, NOW) == _value(6, NOW + 100)


def test_lapsed_held_record_never_blocks_without_a_policy() -> None:
    store = _store(Lapsing())
    store.put(Record(KEY, _value(9, NOW + 100)), None, NOW)
    weaker = _value(1, NOW + 1000)
    with pytest.raises(StaleRecord):
        store.put(Record(KEY, weaker), None, NOW + 99)
    store.put(Record(KEY, weaker), None, NOW + 100)
    assert _held(store, NOW + 100) == weaker


def test_policy_replaces_the_selector_and_sees_the_clock() -> None:
    policed = Policed()
    store = _store(policed)
    first = _value(9, NOW + 100)
    store.put(Record(KEY, first), None, NOW)
    assert policed.calls == []  # nothing held: no decision to make
    # The selector would take rank 11 over 9 and refuse 2; the policy,
    # which wants even ranks, decides the other way round.
    with pytest.raises(StaleRecord):
        store.put(Record(KEY, _value(11, NOW + 100)), None, NOW + 1)
    lower_even = _value(2, NOW + 100)
    store.put(Record(KEY, lower_even), None, NOW + 2)
    assert _held(store, NOW + 2) == lower_even
    assert policed.calls == [
        (KEY, first, _value(11, NOW + 100), NOW + 1),
        (KEY, first, lower_even, NOW + 2),
    ]


def test_lapsed_held_record_never_blocks_with_a_policy() -> None:
    store = _store(Policed())
    store.put(Record(KEY, _value(2, NOW + 100)), None, NOW)
    odd = _value(3, NOW + 1000)
    with pytest.raises(StaleRecord):
        store.put(Record(KEY, odd), None, NOW + 99)
    store.put(Record(KEY, odd), None, NOW + 100)
    assert _held(store, NOW + 100) == odd


def test_registry_replaces_rejects_unknown_namespaces() -> None:
    registry = NamespaceRegistry()
    with pytest.raises(InvalidRecord):
        registry.replaces(b"/nope/x", b"a", b"b", NOW)
