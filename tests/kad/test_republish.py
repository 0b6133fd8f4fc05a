import random

import pytest

from overlay.kad.keyspace import fake_peer_id
from overlay.kad.republish import ReplicateRecord, RepublishConfig, Republisher, RepublishRecord, Reprovide

T0 = 1_700_000_000.0


def test_publisher_republishes_and_holder_replicates_on_schedule() -> None:
    r = Republisher(RepublishConfig(record_republish_interval=100, replicate_interval=30, reprovide_interval=50))
    r.published(b"/v/mine", T0)
    r.stored(b"/v/mine", T0)  # our own record is not also re-replicated
    r.stored(b"/v/theirs", T0)
    r.provided(b"cid", T0)
    assert r.next_deadline() == T0 + 30
    assert r.on_timer(T0 + 29) == []
    assert r.on_timer(T0 + 30) == [ReplicateRecord(b"/v/theirs")]
    assert r.on_timer(T0 + 50) == [Reprovide(b"cid")]
    assert r.on_timer(T0 + 100) == [RepublishRecord(b"/v/mine"), ReplicateRecord(b"/v/theirs"), Reprovide(b"cid")]
    r.unpublish(b"/v/mine")
    r.dropped(b"/v/theirs")
    r.unprovide(b"cid")
    assert r.next_deadline() is not None  # /v/mine is still held
    r.dropped(b"/v/mine")
    assert r.next_deadline() is None and r.on_timer(T0 + 10_000) == []


def test_replication_only_reaches_new_closest_peers() -> None:
    rng = random.Random(4)
    a, b, c = (fake_peer_id(rng) for _ in range(3))
    r = Republisher(RepublishConfig())
    assert r.new_replicas(b"/v/x", [a, b]) == {a, b}
    assert r.new_replicas(b"/v/x", [a, b]) == frozenset()
    assert r.new_replicas(b"/v/x", [b, c]) == {c}


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        RepublishConfig(replicate_interval=0)
