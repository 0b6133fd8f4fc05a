from __future__ import annotations

import pytest
from multiaddr import Multiaddr

from overlay.host import ObservedAddrs, Peerstore
from overlay.identity import Ed25519PrivateKey, PeerId


def _peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


def _addr(port: int) -> Multiaddr:
    return Multiaddr(f"/ip4/10.0.0.1/udp/{port}/quic-v1")


def test_addrs_are_capped_oldest_first() -> None:
    store = Peerstore(max_addrs=3)
    peer = _peer()
    store.add_addrs(peer, [_addr(1), _addr(2), _addr(3)])
    store.add_addrs(peer, [_addr(1), _addr(4)])  # 1 refreshed, 2 is now oldest
    assert store.addrs(peer) == [_addr(3), _addr(1), _addr(4)]
    store.set_addrs(peer, [_addr(i) for i in range(10, 20)])
    assert len(store.addrs(peer)) == 3


def test_peers_are_capped_least_recently_updated_first() -> None:
    store = Peerstore(max_peers=2)
    a, b, c = _peer(), _peer(), _peer()
    store.add_addrs(a, [_addr(1)])
    store.add_addrs(b, [_addr(2)])
    store.set_protocols(a, ["/x"])  # touch a
    store.add_addrs(c, [_addr(3)])
    assert set(store.peers()) == {a, c}
    assert b not in store


def test_protocols_capped_and_queried() -> None:
    store = Peerstore(max_protocols=2)
    peer = _peer()
    store.set_protocols(peer, ["/a", "/b", "/c"])
    assert store.protocols(peer) == frozenset({"/a", "/b"})
    assert store.supports(peer, "/a") and not store.supports(peer, "/c")
    assert store.protocols(_peer()) == frozenset()


def test_public_key_must_match() -> None:
    store = Peerstore()
    key = Ed25519PrivateKey.generate().public_key()
    peer = PeerId.from_public_key(key)
    with pytest.raises(ValueError):
        store.set_public_key(_peer(), key)
    store.set_public_key(peer, key)
    assert store.public_key(peer) == key
    # Ed25519 IDs inline the key, so it is known even without identify.
    other_key = Ed25519PrivateKey.generate().public_key()
    assert store.public_key(PeerId.from_public_key(other_key)) == other_key


def test_record_seq_only_rises() -> None:
    store = Peerstore()
    peer = _peer()
    assert store.accept_record_seq(peer, 5)
    assert not store.accept_record_seq(peer, 5)
    assert not store.accept_record_seq(peer, 4)
    assert store.accept_record_seq(peer, 6)


def test_versions_keep_previous_when_absent() -> None:
    store = Peerstore()
    peer = _peer()
    store.set_versions(peer, "agent/1", "ipfs/0.1.0")
    store.set_versions(peer, None, None)
    info = store.get(peer)
    assert info is not None and info.agent_version == "agent/1"


def test_observed_addrs_count_distinct_reporters() -> None:
    book = ObservedAddrs(max_reporters=3)
    x, y = _addr(1), _addr(2)
    p1, p2, p3, p4 = _peer(), _peer(), _peer(), _peer()
    book.record(p1, x)
    book.record(p1, x)  # same reporter counts once
    book.record(p2, x)
    book.record(p3, y)
    assert book.addrs() == [(x, 2), (y, 1)]
    assert book.addrs(min_reporters=2) == [(x, 2)]
    book.record(p4, y)  # evicts p1, the oldest reporter
    assert book.addrs() == [(y, 2), (x, 1)]
    book.forget(p2)
    assert book.addrs() == [(y, 2)]
