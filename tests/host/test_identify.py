from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiaddr import Multiaddr

from overlay.errors import DecodeError, MessageTooLarge, OverlayError
from overlay.host import IdentifyMismatch, build_identify, parse_identify
from overlay.host.identify import read_identify, write_identify
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.identity.peer_record import PeerRecord, seal_peer_record
from overlay.wire import frame
from overlay.wire.memory import memory_stream_pair
from overlay.wire.pb.identify_pb2 import Identify

KEY = Ed25519PrivateKey.generate()
PEER = PeerId.from_public_key(KEY.public_key())
ADDR = Multiaddr("/ip4/192.0.2.1/udp/4001/quic-v1")
OBSERVED = Multiaddr("/ip4/198.51.100.7/udp/5555/quic-v1")


def _build(**overrides: object) -> bytes:
    args: dict[str, object] = dict(
        listen_addrs=[ADDR],
        protocols=["/ipfs/ping/1.0.0", "/ipfs/id/1.0.0"],
        observed_addr=OBSERVED,
        agent_version="overlay/test",
        protocol_version="ipfs/0.1.0",
    )
    args.update(overrides)
    return build_identify(KEY, **args)  # type: ignore[arg-type]


def test_roundtrip() -> None:
    info = parse_identify(_build(), PEER)
    assert info.peer_id == PEER
    assert info.public_key == KEY.public_key()
    assert info.agent_version == "overlay/test"
    assert info.protocol_version == "ipfs/0.1.0"
    assert info.protocols == ("/ipfs/ping/1.0.0", "/ipfs/id/1.0.0")
    assert info.listen_addrs == (ADDR,)
    assert info.observed_addr == OBSERVED
    assert info.record_seq is None


def test_key_of_another_peer_is_rejected() -> None:
    other = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(IdentifyMismatch):
        parse_identify(_build(), other)


def test_signed_record_addresses_win() -> None:
    signed_addr = Multiaddr("/ip4/203.0.113.5/udp/4001/quic-v1")
    record = seal_peer_record(KEY, PeerRecord(PEER, 42, (signed_addr.to_bytes(),)))
    info = parse_identify(_build(signed_peer_record=record), PEER)
    assert info.record_seq == 42
    assert info.listen_addrs == (signed_addr,)


def test_record_of_another_peer_is_rejected() -> None:
    other_key = Ed25519PrivateKey.generate()
    other = PeerId.from_public_key(other_key.public_key())
    record = seal_peer_record(other_key, PeerRecord(other, 1, ()))
    with pytest.raises(IdentifyMismatch):
        parse_identify(_build(signed_peer_record=record), PEER)


def test_broken_record_is_ignored_but_rest_kept() -> None:
    info = parse_identify(_build(signed_peer_record=b"\x01\x02garbage"), PEER)
    assert info.record_seq is None
    assert info.listen_addrs == (ADDR,)


def test_bad_addresses_are_skipped_and_lists_capped() -> None:
    msg = Identify()
    msg.ParseFromString(_build())
    msg.listenAddrs.extend([b"", b"\xff\xff\xff", b"\x04" + b"\x00" * 2000])
    msg.protocols.extend([f"/p/{i}" for i in range(300)] + [""])
    info = parse_identify(msg.SerializeToString(), PEER, max_protocols=10)
    assert info.listen_addrs == (ADDR,)
    assert len(info.protocols) == 10


def test_push_without_fields_is_marked_partial() -> None:
    msg = Identify(agentVersion="x/1")
    info = parse_identify(msg.SerializeToString(), PEER)
    assert not info.has_protocols and not info.has_listen_addrs
    assert info.public_key is None and info.observed_addr is None


def test_malformed_protobuf() -> None:
    with pytest.raises(DecodeError):
        parse_identify(b"\x0a\xff\xff\xff\x0f", PEER)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_parse_raises_only_overlay_errors(data: bytes) -> None:
    try:
        parse_identify(data, PEER)
    except OverlayError:
        pass


async def test_stream_roundtrip_and_split_frames() -> None:
    a, b = memory_stream_pair()
    message = _build()
    async with asyncio.timeout(5):
        await write_identify(a, message)
        assert await read_identify(b, 65536) == message
    # go-libp2p may send the signed record in a second frame.
    record = seal_peer_record(KEY, PeerRecord(PEER, 7, (ADDR.to_bytes(),)))
    tail = Identify(signedPeerRecord=record).SerializeToString()
    a, b = memory_stream_pair()
    a.write(frame(message) + frame(tail))
    a.write_eof()
    async with asyncio.timeout(5):
        joined = await read_identify(b, 65536)
    assert parse_identify(joined, PEER).record_seq == 7


async def test_read_limits() -> None:
    a, b = memory_stream_pair()
    a.write(frame(b"x" * 600) + frame(b"y" * 600))
    a.write_eof()
    async with asyncio.timeout(5):
        with pytest.raises(MessageTooLarge):
            await read_identify(b, 1000)
    a, b = memory_stream_pair()
    a.write_eof()
    async with asyncio.timeout(5):
        with pytest.raises(DecodeError):
            await read_identify(b, 1000)
    a, b = memory_stream_pair()
    a.write(frame(b"") * 20)
    a.write_eof()
    async with asyncio.timeout(5):
        with pytest.raises(DecodeError):
            await read_identify(b, 1000)


def test_own_p2p_suffix_is_stripped_but_a_relay_route_is_kept() -> None:
    own = Multiaddr(f"/ip4/203.0.113.5/udp/4001/quic-v1/p2p/{PEER}")
    relay_peer = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    relayed = Multiaddr(f"/ip4/203.0.113.9/udp/4001/quic-v1/p2p/{relay_peer}")
    record = seal_peer_record(KEY, PeerRecord(PEER, 7, (own.to_bytes(), relayed.to_bytes())))
    info = parse_identify(_build(signed_peer_record=record), PEER)
    assert info.listen_addrs == (Multiaddr("/ip4/203.0.113.5/udp/4001/quic-v1"), relayed)
