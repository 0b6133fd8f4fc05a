"""`overlay demo` checks that each name gives back its owner's vIPs, and
the record-to-vIP step it shares with the daemon."""

from __future__ import annotations

import ipaddress
import time

from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.naming.record import NameRecord, PeerTarget
from overlay.seed_demo import format_seed_report, seed_demo_report
from overlay.vip import SELF_V4, V4_NETWORK, vip6_of
from overlay.vip.names import record_vips
from overlay.vip.router import VipRouter


def new_peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


def record(*peers: PeerId | bytes) -> NameRecord:
    targets = tuple(PeerTarget(p if isinstance(p, bytes) else p.to_bytes()) for p in peers)
    return NameRecord(name="alice.ovl", owner=b"owner", sequence=1,
                      expires=int(time.time()) + 3600, ttl=60, peers=targets, ips=())


def test_record_vips_are_the_first_readable_peers() -> None:
    me, a, b = new_peer(), new_peer(), new_peer()
    router = VipRouter(me)
    assert record_vips(router, record(), 0.0) is None
    found = record_vips(router, record(b"\x00junk", a, b), 0.0)
    assert found is not None
    peer, v4, v6 = found
    assert peer == a and v6 == vip6_of(a)
    assert v4 is not None and v4 in V4_NETWORK and v4 != SELF_V4
    # The same table entry next time; our own name is our own address.
    assert record_vips(router, record(a), 1.0) == (a, v4, v6)
    assert record_vips(router, record(me), 1.0) == (me, SELF_V4, vip6_of(me))


async def test_every_name_gives_back_its_owners_vips() -> None:
    report = await seed_demo_report(peer_count=3, timeout=60.0, pow_bits=4)
    assert report.ok, report
    peer_of = {node.label: PeerId.from_string(node.peer_id) for node in report.nodes}
    owner_of = {r.name: r.owner for r in report.registrations}
    for check in report.checks:
        owner = peer_of[owner_of[check.name]]
        assert check.vip6_ok and check.vip6 == str(vip6_of(owner)), check
        assert check.vip4 is not None
        if check.src == owner_of[check.name]:
            assert check.vip4 == str(SELF_V4), check
        else:
            assert ipaddress.IPv4Address(check.vip4) in V4_NETWORK, check
    text = format_seed_report(report)
    for name, label in owner_of.items():
        assert f"{name} gives back {label}'s vIPv6 {vip6_of(peer_of[label])}" in text
    assert "OK: 6/6 resolutions and exchanges succeeded" in text
