"""The peer memory's pure core: encoding, versioning, merging at a fixed time."""

import json

import pytest

from overlay.daemon.persist import (
    PeerMemoryConfig,
    PeerStateError,
    SavedPeer,
    bootstrap_addrs,
    decode_peers,
    encode_peers,
    merge_peers,
)
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.statefile import CorruptState

NOW = 1_800_000_000.0
CONFIG = PeerMemoryConfig(max_peers=3, max_addrs=2, max_age=1000.0)


def new_peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


def addr(n: int) -> str:
    return f"/ip4/192.0.2.{n}/udp/4001/quic-v1"


def test_roundtrip_keeps_every_field() -> None:
    peers = [SavedPeer(new_peer(), (addr(1), addr(2)), NOW - 5, True),
             SavedPeer(new_peer(), (addr(3),), NOW - 9, False)]
    assert decode_peers(encode_peers(peers, NOW), CONFIG) == peers
    assert json.loads(encode_peers(peers, NOW))["version"] == 1
    assert json.loads(encode_peers(peers, NOW))["format"] == "overlay-peers"
    # A file of this version written before the envelope had a format loads.
    legacy = json.loads(encode_peers(peers, NOW))
    del legacy["format"]
    assert decode_peers(json.dumps(legacy).encode(), CONFIG) == peers


@pytest.mark.parametrize("data, why", [
    (b"{not json", "not JSON"),
    (b'{"version": 2, "peers": []}', "version 2"),
    (b'["version", 1]', "version None"),
    (b'{"version": 1}', "no `peers` list"),
    (b"x" * 2048, "over"),
    (b'{"format": "overlay-kad-records", "version": 1, "peers": []}', "another format"),
])
def test_broken_or_foreign_files_are_refused_with_the_reason(data: bytes, why: str) -> None:
    assert issubclass(PeerStateError, CorruptState)  # one error for every state file
    with pytest.raises(PeerStateError, match=why):
        decode_peers(data, PeerMemoryConfig(max_file_bytes=1024))


def test_bad_entries_and_undialable_addresses_are_skipped_one_by_one() -> None:
    good = new_peer()
    document = {"version": 1, "peers": [
        {"peer_id": "nonsense", "addrs": [addr(1)], "last_seen": NOW},
        {"peer_id": str(new_peer()), "addrs": ["/ip4/0.0.0.0/udp/4001/quic-v1"], "last_seen": NOW},
        {"peer_id": str(new_peer()), "addrs": [addr(2)], "last_seen": "yesterday"},
        "junk",
        {"peer_id": str(good), "addrs": [addr(3), "/tcp/1", addr(3) + f"/p2p/{good}", 7],
         "last_seen": NOW, "dht_server": True},
    ]}
    assert decode_peers(json.dumps(document).encode(), CONFIG) == [
        SavedPeer(good, (addr(3),), NOW, True)]


def test_merge_prefers_the_live_view_keeps_recent_memory_and_caps() -> None:
    me, live, old, stale, extra = (new_peer() for _ in range(5))
    current = [SavedPeer(live, (addr(1), addr(2), addr(3)), NOW, False),
               SavedPeer(me, (addr(9),), NOW, True)]
    remembered = [SavedPeer(live, (addr(8),), NOW - 50, True),
                  SavedPeer(old, (addr(4),), NOW - 100, True),
                  SavedPeer(stale, (addr(5),), NOW - 1001, True),  # past max_age
                  SavedPeer(extra, (addr(6),), NOW - 200, True)]
    merged = merge_peers(current, remembered, CONFIG, NOW, own=me)
    assert [p.peer_id for p in merged] == [live, old, extra]
    assert merged[0].addrs == (addr(1), addr(2))  # the live addresses, capped at max_addrs
    capped = merge_peers(current, remembered, PeerMemoryConfig(max_peers=2), NOW, own=me)
    assert [p.peer_id for p in capped] == [live, old]  # most recently seen first


def test_bootstrap_addrs_put_dht_servers_first_and_skip_configured() -> None:
    me, client, server = new_peer(), new_peer(), new_peer()
    peers = [SavedPeer(client, (addr(1),), NOW, False),
             SavedPeer(server, (addr(2), addr(3)), NOW, True),
             SavedPeer(me, (addr(4),), NOW, True)]
    configured = f"{addr(3)}/p2p/{server}"
    assert bootstrap_addrs(peers, me, skip=[configured]) == [
        f"{addr(2)}/p2p/{server}", f"{addr(1)}/p2p/{client}"]
