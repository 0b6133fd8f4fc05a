"""The discovered-peers table: sightings, goodbyes, expiry and bounded dials."""

from __future__ import annotations

import pytest

from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.mdns import DiscoveredPeers, Sighting, TableConfig
from overlay.multiaddrs import parse_quic_multiaddr


def new_peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


def sighting(peer: PeerId, *ips: str) -> Sighting:
    return Sighting(peer, tuple(parse_quic_multiaddr(f"/ip4/{ip}/udp/4001/quic-v1")
                                for ip in ips or ("10.0.0.1",)), 0)


def test_a_new_peer_is_due_for_one_dial_at_a_time() -> None:
    table = DiscoveredPeers()
    a, b = new_peer(), new_peer()
    assert table.saw("a._p2p._udp.local.", sighting(a), now=0.0)
    assert table.saw("b._p2p._udp.local.", sighting(b), now=0.0)
    first = table.next_dial(0.0)
    assert first is not None and first.peer_id == a
    second = table.next_dial(0.0)
    assert second is not None and second.peer_id == b  # a is being dialed
    assert table.next_dial(0.0) is None
    table.dial_finished(a, True, 1.0)
    table.dial_finished(b, True, 1.0)
    assert table.next_dial(100.0) is None  # connected peers are not dialed again
    assert len(table) == 2


def test_failed_dials_back_off_and_stop_at_the_cap() -> None:
    table = DiscoveredPeers(TableConfig(max_attempts=3, retry_delay=5.0))
    peer = new_peer()
    table.saw("p", sighting(peer), 0.0)
    times = []
    now = 0.0
    while True:
        entry = table.next_dial(now)
        if entry is None:
            deadline = table.next_deadline()
            assert deadline is not None
            if deadline >= 4000:  # only the expiry is left
                break
            assert deadline > now
            now = deadline
            continue
        times.append(now)
        table.dial_finished(peer, False, now)
    assert times == [0.0, 5.0, 15.0]
    # A sighting with new addresses earns fresh attempts; the same one does not.
    assert not table.saw("p", sighting(peer), now)
    assert table.next_dial(now + 1000) is None
    assert table.saw("p", sighting(peer, "10.0.0.2"), now)
    assert table.next_dial(now) is not None


def test_goodbye_forgets_a_peer_once_no_instance_announces_it() -> None:
    table = DiscoveredPeers()
    peer = new_peer()
    table.saw("old", sighting(peer), 0.0)
    table.saw("new", sighting(peer), 1.0)  # a restart, before the old goodbye
    assert table.gone("old") is None and peer in table
    assert table.gone("new") == peer and peer not in table
    assert table.gone("never") is None


def test_an_instance_that_changes_peer_releases_the_old_one() -> None:
    table = DiscoveredPeers()
    a, b = new_peer(), new_peer()
    table.saw("x", sighting(a), 0.0)
    table.saw("x", sighting(b), 1.0)
    assert a not in table and b in table


def test_expiry_at_now() -> None:
    table = DiscoveredPeers(TableConfig(peer_ttl=10.0))
    a, b = new_peer(), new_peer()
    table.saw("a", sighting(a), 0.0)
    table.saw("b", sighting(b), 5.0)
    assert table.expire(9.9) == []
    assert table.expire(10.0) == [a]
    table.saw("b", sighting(b), 12.0)  # seen again: believed longer
    assert table.expire(20.0) == [] and table.expire(22.0) == [b]
    assert len(table) == 0 and table.next_deadline() is None
    assert table.gone("a") is None


def test_the_table_is_capped_least_recently_seen_first() -> None:
    table = DiscoveredPeers(TableConfig(max_peers=3))
    peers = [new_peer() for _ in range(5)]
    for i, peer in enumerate(peers):
        table.saw(f"n{i}", sighting(peer), float(i))
    assert [e.peer_id for e in table.peers()] == peers[2:]
    assert table.gone("n0") is None


def test_a_disconnected_peer_may_be_dialed_again_within_its_attempts() -> None:
    table = DiscoveredPeers()
    peer = new_peer()
    table.saw("p", sighting(peer), 0.0)
    entry = table.next_dial(0.0)
    assert entry is not None
    table.dial_finished(peer, True, 0.0)
    table.set_connected(peer, False)
    again = table.next_dial(1.0)
    assert again is not None and again.attempts == 2


@pytest.mark.parametrize("kwargs", [{"peer_ttl": 0}, {"max_peers": 0}, {"max_attempts": 0},
                                    {"retry_delay": -1}])
def test_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TableConfig(**kwargs)  # type: ignore[arg-type]
