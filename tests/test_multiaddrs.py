from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiaddr import Multiaddr

from overlay.errors import DecodeError, InvalidMultiaddr, MessageTooLarge
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.multiaddrs import (
    MAX_MULTIADDR_BYTES,
    QuicAddr,
    format_quic_multiaddr,
    is_quic_multiaddr,
    multiaddr_from_bytes,
    multiaddr_to_bytes,
    parse_multiaddr,
    parse_quic_multiaddr,
    split_p2p,
    with_p2p,
)

PEER = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


@pytest.mark.parametrize(
    ("text", "host", "port", "kind", "family"),
    [
        ("/ip4/127.0.0.1/udp/4001/quic-v1", "127.0.0.1", 4001, "ip4", 4),
        ("/ip4/0.0.0.0/udp/0/quic-v1", "0.0.0.0", 0, "ip4", 4),
        ("/ip6/::1/udp/65535/quic-v1", "::1", 65535, "ip6", 6),
        ("/ip6/2001:DB8:0:0::1/udp/9/quic-v1", "2001:db8::1", 9, "ip6", 6),
        ("/dns4/example.com/udp/443/quic-v1", "example.com", 443, "dns4", 4),
        ("/dns6/node-1.example.org/udp/443/quic-v1", "node-1.example.org", 443, "dns6", 6),
    ],
)
def test_parse_valid_quic_addresses(
    text: str, host: str, port: int, kind: str, family: int
) -> None:
    addr = parse_quic_multiaddr(text)
    assert (addr.host, addr.port, addr.kind, addr.family) == (host, port, kind, family)
    assert addr.peer_id is None
    assert addr.is_dns == kind.startswith("dns")
    assert addr.socket_address == (host, port)
    assert parse_quic_multiaddr(str(addr)) == addr
    assert parse_quic_multiaddr(Multiaddr(text)) == addr


def test_peer_id_suffix_in_base58_and_cid_form() -> None:
    for suffix in (str(PEER), PEER.to_cid(), PEER.to_cid("base36")):
        addr = parse_quic_multiaddr(f"/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{suffix}")
        assert addr.peer_id == PEER
    legacy = parse_quic_multiaddr(f"/ip4/10.0.0.1/udp/4001/quic-v1/ipfs/{PEER}")
    assert legacy.peer_id == PEER
    assert str(legacy) == f"/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{PEER}"


def test_to_multiaddr_agrees_with_the_multiaddr_package() -> None:
    addr = QuicAddr("::1", 4001, "ip6", PEER)
    ma = addr.to_multiaddr()
    assert str(ma) == f"/ip6/::1/udp/4001/quic-v1/p2p/{PEER}"
    assert parse_quic_multiaddr(ma) == addr
    assert multiaddr_from_bytes(ma.to_bytes()) == ma


def test_draft29_quic_suggests_quic_v1() -> None:
    expected = r"use /quic-v1 instead: /ip4/1\.2\.3\.4/udp/4001/quic-v1"
    with pytest.raises(InvalidMultiaddr, match=expected):
        parse_quic_multiaddr("/ip4/1.2.3.4/udp/4001/quic")
    with pytest.raises(InvalidMultiaddr, match="draft-29"):
        parse_quic_multiaddr(Multiaddr(f"/ip4/1.2.3.4/udp/4001/quic/p2p/{PEER}"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/ip4/1.2.3.4/udp/abc/quic-v1", r"invalid port 'abc' in /udp/abc"),
        ("/ip4/1.2.3.4/udp/65536/quic-v1", r"invalid port '65536'"),
        ("/ip4/1.2.3.4/udp/+1/quic-v1", r"invalid port '\+1'"),
        ("/ip4/1.2.3.4/udp/-1/quic-v1", r"invalid port '-1'"),
        ("/ip4/1.2.3.256/udp/1/quic-v1", r"invalid IPv4 address '1\.2\.3\.256' in /ip4/"),
        ("/ip4/::1/udp/1/quic-v1", r"invalid IPv4 address '::1'"),
        ("/ip6/1.2.3.4/udp/1/quic-v1", r"invalid IPv6 address '1\.2\.3\.4'"),
        ("/ip6/fe80::1%eth0/udp/1/quic-v1", r"zone"),
        ("/dns4/bad..name/udp/1/quic-v1", r"invalid DNS name 'bad\.\.name'"),
        ("/dns4/-x.com/udp/1/quic-v1", r"invalid DNS name"),
        ("/dns/example.com/udp/1/quic-v1", r"use /dns4 or /dns6"),
        ("/tcp/1/ip4/1.2.3.4", r"must start with /ip4"),
        ("/ip4/1.2.3.4/tcp/4001", r"got /tcp; QUIC runs over UDP"),
        ("/ip4/1.2.3.4", r"missing /udp/<port> after /ip4/1\.2\.3\.4"),
        ("/ip4", r"missing host after /ip4"),
        ("/ip4/1.2.3.4/udp", r"missing port after /udp"),
        ("/ip4/1.2.3.4/udp/1", r"missing /quic-v1 after /udp/1"),
        ("/ip4/1.2.3.4/udp/1/webrtc", r"expected /quic-v1 after /udp/1, got /webrtc"),
        ("/ip4/1.2.3.4/udp/1/quic-v1/p2p", r"missing peer ID after /p2p"),
        (
            "/ip4/1.2.3.4/udp/1/quic-v1/p2p/notapeer",
            r"invalid peer ID 'notapeer'.* in /p2p/notapeer",
        ),
        ("/ip4/1.2.3.4/udp/1/quic-v1/webtransport", r"unsupported /webtransport after /quic-v1"),
        ("/ip4//udp/1/quic-v1", r"empty component"),
        ("ip4/1.2.3.4/udp/1/quic-v1", r"must start with '/'"),
        ("", r"must start with '/'"),
    ],
)
def test_malformed_addresses_name_the_offending_part(text: str, message: str) -> None:
    with pytest.raises(InvalidMultiaddr, match=message):
        parse_quic_multiaddr(text)
    assert not is_quic_multiaddr(text)


def test_invalid_multiaddr_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_quic_multiaddr("/ip4/1.2.3.4/udp/x/quic-v1")


def test_format_chooses_the_family_from_the_host() -> None:
    assert format_quic_multiaddr("127.0.0.1", 4001) == "/ip4/127.0.0.1/udp/4001/quic-v1"
    assert format_quic_multiaddr("::1", 0) == "/ip6/::1/udp/0/quic-v1"
    assert format_quic_multiaddr("[::1]", 5, PEER) == f"/ip6/::1/udp/5/quic-v1/p2p/{PEER}"
    with pytest.raises(InvalidMultiaddr, match="not an IP address"):
        format_quic_multiaddr("example.com", 1)
    with pytest.raises(InvalidMultiaddr, match="invalid port"):
        format_quic_multiaddr("1.2.3.4", 70000)


def test_quic_addr_validates_its_fields() -> None:
    with pytest.raises(InvalidMultiaddr):
        QuicAddr("1.2.3.4", 1, "ip6")
    with pytest.raises(InvalidMultiaddr):
        QuicAddr("1.2.3.4", True, "ip4")
    assert QuicAddr("1.2.3.4", 1, "ip4").with_peer_id(PEER).peer_id == PEER


def test_split_and_join_p2p() -> None:
    base, peer = split_p2p(f"/ip4/1.2.3.4/udp/1/quic-v1/p2p/{PEER}")
    assert str(base) == "/ip4/1.2.3.4/udp/1/quic-v1" and peer == PEER
    base, peer = split_p2p(Multiaddr("/ip4/1.2.3.4/tcp/80"))
    assert str(base) == "/ip4/1.2.3.4/tcp/80" and peer is None
    joined = with_p2p("/ip4/1.2.3.4/udp/1/quic-v1", PEER)
    assert split_p2p(joined) == (Multiaddr("/ip4/1.2.3.4/udp/1/quic-v1"), PEER)
    assert with_p2p(joined, PEER) == joined
    other = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(InvalidMultiaddr, match="another peer"):
        with_p2p(joined, other)


def test_split_p2p_on_a_circuit_address_takes_the_target() -> None:
    relay = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    text = f"/ip4/1.2.3.4/udp/1/quic-v1/p2p/{relay}/p2p-circuit/p2p/{PEER}"
    base, peer = split_p2p(text)
    assert peer == PEER
    assert str(base) == f"/ip4/1.2.3.4/udp/1/quic-v1/p2p/{relay}/p2p-circuit"


def test_binary_round_trip() -> None:
    for text in (
        "/ip4/1.2.3.4/udp/1/quic-v1",
        f"/ip6/2001:db8::1/udp/4001/quic-v1/p2p/{PEER}",
        "/dns4/example.com/tcp/443",
    ):
        data = multiaddr_to_bytes(text)
        assert str(multiaddr_from_bytes(data)) == text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x04\x7f\x00", "truncated"),
        (b"\x80", "truncated uvarint"),
        (b"\x80\x00", "non-minimal"),
        (b"\xff\xff\x03", "unknown multiaddr protocol"),
        (b"\x35\x05ab", "truncated"),
        (b"\x35\x02\xff\xfe", "invalid multiaddr value"),
        (b"\xa5\x03\x03\x00\x01\x00", "invalid"),
    ],
)
def test_garbage_binary_multiaddrs_raise_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        multiaddr_from_bytes(data)


def test_binary_size_limit() -> None:
    data = b"\x04\x7f\x00\x00\x01" * 300
    with pytest.raises(MessageTooLarge):
        multiaddr_from_bytes(data)
    with pytest.raises(MessageTooLarge):
        multiaddr_from_bytes(b"\x04\x7f\x00\x00\x01" * 3, limit=10)
    assert len(data) > MAX_MULTIADDR_BYTES


def test_parse_multiaddr_accepts_other_transports_with_typed_errors() -> None:
    assert str(parse_multiaddr("/ip4/1.2.3.4/tcp/80")) == "/ip4/1.2.3.4/tcp/80"
    for bad in ("/ip4/1.2.3.4/tcp/99999", "/nope/1", "/ip4", "", "ip4/1.2.3.4"):
        with pytest.raises(InvalidMultiaddr):
            parse_multiaddr(bad)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    try:
        ma = multiaddr_from_bytes(data)
    except DecodeError:
        return
    assert ma.to_bytes() == data
    str(ma)  # a decoded address always prints


_PARTS = st.sampled_from(
    ["ip4", "ip6", "dns4", "dns6", "udp", "tcp", "quic", "quic-v1", "p2p", "1.2.3.4", "::1",
     "4001", "-1", "99999", "example.com", "", "p2p-circuit", str(PEER), "Qm", "12D3KooW"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_PARTS, st.text(max_size=12)), max_size=8), st.booleans())
def test_random_text_raises_only_invalid_multiaddr(parts: list[str], slash: bool) -> None:
    text = ("/" if slash else "") + "/".join(parts)
    try:
        addr = parse_quic_multiaddr(text)
    except InvalidMultiaddr:
        pass
    else:
        assert parse_quic_multiaddr(str(addr)) == addr
    try:
        parse_multiaddr(text)
    except InvalidMultiaddr:
        pass
    try:
        split_p2p(text)
    except InvalidMultiaddr:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(min_value=0, max_value=65535),
    st.booleans(),
)
def test_valid_addresses_round_trip_through_text_and_binary(
    ip: object, port: int, with_peer: bool
) -> None:
    peer = PEER if with_peer else None
    text = format_quic_multiaddr(str(ip), port, peer)
    addr = parse_quic_multiaddr(text)
    assert addr.port == port and addr.peer_id == peer
    assert addr.family == (6 if ":" in str(ip) else 4)
    # The multiaddr package's binary form parses back to the same address.
    binary = addr.to_multiaddr().to_bytes()
    assert parse_quic_multiaddr(multiaddr_from_bytes(binary)) == addr
    assert split_p2p(multiaddr_from_bytes(binary))[1] == peer
