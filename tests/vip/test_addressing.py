import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.vip import (
    SELF_V4,
    ULA_PREFIX,
    AllocatorFull,
    BadPacket,
    ForgedSource,
    Ipv4Allocator,
    Ipv4AllocatorConfig,
    parse_packet,
    rewrite_v4,
    vip6_of,
)
from overlay.vip.router import Drop, Forward, VipRouter
from tests.vip.packets import tcp4, udp4, udp6, valid_v4_checksums


def peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


def test_vip6_is_stable_distinct_and_in_the_ula_prefix() -> None:
    a, b = peer(), peer()
    assert vip6_of(a) == vip6_of(PeerId.from_bytes(a.to_bytes()))
    assert vip6_of(a) != vip6_of(b)
    assert vip6_of(a) in ULA_PREFIX and vip6_of(b) in ULA_PREFIX
    assert str(ULA_PREFIX) == "fd4f:766c:3000::/48"


def test_allocator_hands_out_stable_addresses_and_reverse_maps() -> None:
    alloc = Ipv4Allocator()
    a, b = peer(), peer()
    va = alloc.allocate(a, 0.0)
    vb = alloc.allocate(b, 0.0)
    assert va != vb and va != SELF_V4
    assert va in ipaddress.IPv4Network("100.64.0.0/10")
    assert alloc.allocate(a, 5.0) == va
    assert alloc.peer_of(vb) == b and alloc.lookup(a) == va


def test_full_table_reclaims_only_idle_entries() -> None:
    alloc = Ipv4Allocator(Ipv4AllocatorConfig(max_entries=2, idle_expiry=10.0))
    a, b, c = peer(), peer(), peer()
    va = alloc.allocate(a, 0.0)
    alloc.allocate(b, 1.0)
    with pytest.raises(AllocatorFull):
        alloc.allocate(c, 5.0)  # a was used 5 s ago: still held
    alloc.touch(a, 8.0)  # a in use again: b is now the oldest
    vc = alloc.allocate(c, 11.5)
    assert alloc.lookup(b) is None and alloc.lookup(a) == va
    assert alloc.peer_of(vc) == c and len(alloc) == 2


def test_small_pool_limits_the_table() -> None:
    first = int(SELF_V4) + 1
    alloc = Ipv4Allocator(Ipv4AllocatorConfig(first=first, last=first + 1, idle_expiry=1.0))
    peers = [peer() for _ in range(3)]
    alloc.allocate(peers[0], 0.0)
    alloc.allocate(peers[1], 0.0)
    with pytest.raises(AllocatorFull):
        alloc.allocate(peers[2], 0.5)
    assert int(alloc.allocate(peers[2], 2.0)) in (first, first + 1)


def test_allocator_config_validates() -> None:
    with pytest.raises(ValueError):
        Ipv4AllocatorConfig(max_entries=0)
    with pytest.raises(ValueError):
        Ipv4AllocatorConfig(first=int(SELF_V4))


@given(st.binary(max_size=120))
@settings(max_examples=300)
def test_parse_never_fails_untyped(data: bytes) -> None:
    try:
        info = parse_packet(data)
    except BadPacket:
        return
    assert info.version in (4, 6)


def test_parse_limits_and_lengths() -> None:
    packet = udp4("100.64.0.1", "100.64.0.9")
    assert parse_packet(packet).destination == ipaddress.IPv4Address("100.64.0.9")
    with pytest.raises(BadPacket):
        parse_packet(packet, limit=len(packet) - 1)
    with pytest.raises(BadPacket):
        parse_packet(packet + b"x")  # total length disagrees
    with pytest.raises(BadPacket):
        parse_packet(udp6("fd4f:766c:3000::1", "fd4f:766c:3000::2")[:-1])


@given(st.integers(int(ipaddress.IPv4Address("100.64.0.2")), int(ipaddress.IPv4Address("100.127.255.254"))),
       st.binary(max_size=64), st.booleans())
@settings(max_examples=200)
def test_rewrite_keeps_checksums_valid(address: int, payload: bytes, tcp: bool) -> None:
    build = tcp4 if tcp else udp4
    packet = build("100.64.0.1", "100.64.0.1", payload)
    out = rewrite_v4(packet, ipaddress.IPv4Address(address), SELF_V4)
    assert valid_v4_checksums(out)
    assert parse_packet(out).source == ipaddress.IPv4Address(address)
    assert out[20:] != packet[20:] or address == int(SELF_V4)


def test_router_v6_round_trip_and_forged_source() -> None:
    a, b, c = peer(), peer(), peer()
    ra, rb = VipRouter(a), VipRouter(b)
    ra.learn(b)
    packet = udp6(str(vip6_of(a)), str(vip6_of(b)))
    out = ra.outbound(packet, 0.0)
    assert out == Forward(b, packet)
    assert rb.inbound(a, packet, 0.0) == packet
    with pytest.raises(ForgedSource):
        rb.inbound(c, packet, 0.0)  # c claims a's address
    with pytest.raises(ForgedSource):
        rb.inbound(a, udp6(str(vip6_of(a)), str(vip6_of(c))), 0.0)
    assert rb.drops["forged source"] == 1 and rb.drops["not to us"] == 1
    # Packets not from our own vip6, or to an unknown one, stay here.
    assert isinstance(ra.outbound(udp6("fe80::1", str(vip6_of(b))), 0.0), Drop)
    assert isinstance(ra.outbound(udp6(str(vip6_of(a)), str(vip6_of(c))), 0.0), Drop)


def test_router_v4_translates_between_local_tables() -> None:
    a, b, c = peer(), peer(), peer()
    ra, rb = VipRouter(a), VipRouter(b)
    rb.allocator.allocate(c, 0.0)  # b's table differs from a's
    vb_at_a, _ = ra.addresses_of(b, 0.0)
    assert vb_at_a is not None
    sent = udp4("100.64.0.1", str(vb_at_a), b"ping")
    out = ra.outbound(sent, 0.0)
    assert isinstance(out, Forward) and out.peer == b
    assert parse_packet(out.packet).destination == SELF_V4
    delivered = rb.inbound(a, out.packet, 0.0)
    info = parse_packet(delivered)
    assert info.source == rb.allocator.lookup(a) and info.destination == SELF_V4
    assert valid_v4_checksums(delivered)
    with pytest.raises(ForgedSource):
        rb.inbound(a, udp4("100.64.0.7", "100.64.0.1"), 0.0)
    assert isinstance(ra.outbound(udp4("100.64.0.1", "100.64.9.9"), 0.0), Drop)
    assert isinstance(ra.outbound(udp4("10.0.0.1", str(vb_at_a)), 0.0), Drop)
