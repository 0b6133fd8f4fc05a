"""The dnsaddr TXT entries we announce and the ones we accept."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.mdns import (
    MAX_PEER_ADDRS,
    MAX_TXT_RDATA,
    MAX_TXT_STRING,
    MAX_TXT_STRINGS,
    BadEntry,
    MdnsDecodeError,
    MixedPeers,
    TxtTooLarge,
    build_announcement,
    decode_txt,
    encode_txt,
    parse_entry,
    parse_txt,
    random_peer_name,
)
from overlay.errors import MessageTooLarge


def new_peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


ME = new_peer()
OTHER = new_peer()


def entry(text: str) -> bytes:
    return b"dnsaddr=" + text.encode()


def test_peer_name_is_one_random_label_of_32_to_63_characters() -> None:
    rng = random.Random(7)
    names = [random_peer_name(rng) for _ in range(500)]
    assert {len(n) for n in names} <= set(range(32, 64))
    assert min(map(len, names)) < 40 and max(map(len, names)) > 55
    assert all(n.isascii() and n.isalnum() and n == n.lower() for n in names)
    assert len(set(names)) == 500
    assert str(ME) not in names
    assert random_peer_name(random.Random(7)) == names[0]  # injected randomness only


def test_announcement_has_one_dnsaddr_string_per_address_with_our_peer_id() -> None:
    addrs = ["/ip4/10.0.0.5/udp/4001/quic-v1", f"/ip6/fd00::5/udp/4001/quic-v1/p2p/{ME}"]
    announced = build_announcement(ME, addrs)
    assert announced.entries == (
        entry(f"/ip4/10.0.0.5/udp/4001/quic-v1/p2p/{ME}"),
        entry(f"/ip6/fd00::5/udp/4001/quic-v1/p2p/{ME}"))
    assert announced.skipped == ()
    assert decode_txt(announced.rdata()) == list(announced.entries)
    sighting = parse_txt(announced.rdata(), OTHER)
    assert sighting is not None and sighting.peer_id == ME
    assert [str(a) for a in sighting.addrs] == [
        "/ip4/10.0.0.5/udp/4001/quic-v1", "/ip6/fd00::5/udp/4001/quic-v1"]


def test_announcement_leaves_out_what_does_not_fit() -> None:
    long_dns = "/dns4/" + ".".join(["a" * 60] * 4) + "/udp/1/quic-v1"
    announced = build_announcement(ME, [long_dns, "/ip4/10.0.0.5/udp/1/quic-v1",
                                        "/ip4/10.0.0.5/udp/1/quic-v1"])
    assert announced.skipped == (long_dns, "/ip4/10.0.0.5/udp/1/quic-v1")  # too long, repeat
    assert len(announced.entries) == 1
    many = [f"/ip4/10.0.{i // 250}.{i % 250}/udp/4001/quic-v1" for i in range(40)]
    budgeted = build_announcement(ME, many, budget=400)
    assert 0 < len(budgeted.entries) < 40
    assert len(budgeted.rdata()) <= 400
    assert len(budgeted.entries) + len(budgeted.skipped) == 40
    assert all(len(e) <= MAX_TXT_STRING for e in build_announcement(ME, many).entries)


def test_encode_refuses_a_string_over_255_bytes() -> None:
    with pytest.raises(ValueError):
        encode_txt([b"x" * 256])


@pytest.mark.parametrize("rdata", [b"\x05abc", b"\x01", b"\x03abc\x09"])
def test_truncated_txt_is_a_decode_error(rdata: bytes) -> None:
    with pytest.raises(MdnsDecodeError, match="claims"):
        decode_txt(rdata)


def test_oversized_txt_is_refused_before_parsing() -> None:
    with pytest.raises(TxtTooLarge) as info:
        decode_txt(b"\x00" * (MAX_TXT_RDATA + 1))
    assert isinstance(info.value, MessageTooLarge) and info.value.limit == MAX_TXT_RDATA
    with pytest.raises(TxtTooLarge):
        decode_txt(encode_txt([b"k=v"] * (MAX_TXT_STRINGS + 1)))
    assert len(decode_txt(encode_txt([b"k=v"] * MAX_TXT_STRINGS))) == MAX_TXT_STRINGS


def test_empty_strings_are_skipped() -> None:
    assert decode_txt(b"\x00\x01a\x00") == [b"a"]
    assert decode_txt(b"") == []


@pytest.mark.parametrize(("raw", "reason"), [
    (b"path=/x", "prefix"),
    (b"dnsaddr=/ip4/10.0.0.1/udp/1/quic-v1/p2p/\xff", "utf8"),
    (b"dnsaddr=not-a-multiaddr", "multiaddr"),
    (b"dnsaddr=/ip4/10.0.0.1/udp/1/quic-v1/p2p/QmNotAPeer", "multiaddr"),
    (b"dnsaddr=/ip4/10.0.0.1/udp/1/quic-v1", "no_peer"),
    (entry(f"/ip4/10.0.0.1/tcp/4001/p2p/{OTHER}"), "undialable"),
    (entry(f"/ip4/10.0.0.1/udp/4001/quic/p2p/{OTHER}"), "undialable"),
    (entry(f"/ip4/10.0.0.1/udp/4001/webrtc-direct/p2p/{OTHER}"), "undialable"),
    (entry(f"/ip4/0.0.0.0/udp/4001/quic-v1/p2p/{OTHER}"), "undialable"),
    (entry(f"/ip4/224.0.0.251/udp/4001/quic-v1/p2p/{OTHER}"), "undialable"),
    (entry(f"/ip4/10.0.0.1/udp/0/quic-v1/p2p/{OTHER}"), "undialable"),
    (entry(f"/dns4/peer.local/udp/4001/quic-v1/p2p/{OTHER}"), "undialable"),
    (entry(f"/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{ME}/p2p-circuit/p2p/{OTHER}"), "undialable"),
])
def test_bad_entries_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(BadEntry) as info:
        parse_entry(raw)
    assert info.value.reason == reason


def test_a_go_peer_record_yields_its_quic_address_only() -> None:
    # go-libp2p announces every thin-waist address, TCP included, in one record.
    rdata = encode_txt([
        entry(f"/ip4/192.168.1.7/tcp/4001/p2p/{OTHER}"),
        entry(f"/ip4/192.168.1.7/udp/4001/quic-v1/p2p/{OTHER}"),
        entry(f"/ip4/192.168.1.7/udp/4001/quic-v1/webtransport/p2p/{OTHER}"),
        b"junk-without-prefix",
    ])
    sighting = parse_txt(rdata, ME)
    assert sighting is not None and sighting.peer_id == OTHER
    assert [str(a) for a in sighting.addrs] == ["/ip4/192.168.1.7/udp/4001/quic-v1"]
    assert sighting.ignored == 2  # the TCP and WebTransport entries; junk is not counted


def test_our_own_record_and_records_without_dialable_addresses_are_ignored() -> None:
    own = build_announcement(ME, ["/ip4/10.0.0.5/udp/4001/quic-v1"]).rdata()
    assert parse_txt(own, ME) is None
    tcp_only = encode_txt([entry(f"/ip4/10.0.0.1/tcp/1/p2p/{OTHER}")])
    assert parse_txt(tcp_only, ME) is None
    assert parse_txt(b"", ME) is None


def test_entries_naming_two_peers_are_rejected() -> None:
    rdata = encode_txt([entry(f"/ip4/10.0.0.1/udp/1/quic-v1/p2p/{OTHER}"),
                        entry(f"/ip4/10.0.0.2/udp/1/quic-v1/p2p/{ME}")])
    with pytest.raises(MixedPeers):
        parse_txt(rdata, new_peer())


def test_addresses_per_peer_are_capped_and_deduplicated() -> None:
    entries = [entry(f"/ip4/10.0.1.{i}/udp/1/quic-v1/p2p/{OTHER}")
               for i in range(MAX_PEER_ADDRS + 5)]
    sighting = parse_txt(encode_txt([entries[0], *entries]), ME)
    assert sighting is not None
    assert len(sighting.addrs) == MAX_PEER_ADDRS and sighting.ignored == 5


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2 * MAX_TXT_RDATA))
def test_fuzz_any_bytes_parse_or_raise_a_decode_error(rdata: bytes) -> None:
    try:
        sighting = parse_txt(rdata, ME)
    except MdnsDecodeError:
        return
    if sighting is not None:
        assert sighting.peer_id != ME and 0 < len(sighting.addrs) <= MAX_PEER_ADDRS


_ENTRY_PARTS = st.sampled_from([
    entry(f"/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{OTHER}"),
    entry(f"/ip6/fd00::1/udp/9/quic-v1/p2p/{OTHER}"),
    entry(f"/ip4/10.0.0.1/tcp/4001/p2p/{OTHER}"),
    entry(f"/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{ME}"),
    b"dnsaddr=", b"dnsaddr=/", b"dnsaddr=/ip4/", b"x=y", b"\xff\xfe",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_ENTRY_PARTS, st.binary(min_size=1, max_size=MAX_TXT_STRING)),
                max_size=MAX_TXT_STRINGS))
def test_fuzz_structured_records(entries: list[bytes]) -> None:
    rdata = encode_txt(entries)
    try:
        sighting = parse_txt(rdata, new_peer())
    except MixedPeers:
        assert any(e.endswith(str(OTHER).encode()) for e in entries)
        assert any(e.endswith(str(ME).encode()) for e in entries)
        return
    if sighting is not None:
        assert sighting.peer_id in (OTHER, ME)
        assert all(not a.is_dns for a in sighting.addrs)
