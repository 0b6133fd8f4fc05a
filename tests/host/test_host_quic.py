"""Hosts over real QUIC on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest

from overlay import AGENT_VERSION
from overlay.errors import (
    MessageTooLarge,
    PeerIdMismatch,
    ProtocolNotSupported,
    RemoteProtocolError,
    StreamClosed,
    StreamReset,
)
from overlay.host import (
    IDENTIFY_PROTOCOL,
    IDENTIFY_PUSH_PROTOCOL,
    PING_PROTOCOL,
    Host,
    NegotiatedStream,
)
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.wire import encode_uvarint


def _dial_addr(host: Host) -> str:
    return f"{host.listen_addrs()[0]}/p2p/{host.peer_id}"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_listen_addrs_show_real_port(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await quic_hosts(listen=("/ip4/0.0.0.0/udp/0/quic-v1",))
    addrs = [str(x) for x in a.listen_addrs()]
    assert addrs[0].startswith("/ip4/127.0.0.1/udp/")
    port = int(addrs[0].split("/")[4])
    assert port != 0
    assert all(x.endswith(f"/udp/{port}/quic-v1") for x in addrs)


async def test_ping_and_identify_both_ways(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, ra = await quic_hosts()
    b, rb = await quic_hosts()
    async with asyncio.timeout(10):
        conn = await a.connect(_dial_addr(b))
        assert conn.remote_peer == b.peer_id
        rtts = [await a.ping(b.peer_id) for _ in range(3)]
        assert all(0 < rtt < 5 for rtt in rtts)
        await rb.wait_for(lambda: bool(rb.connected))
        assert await b.ping(a.peer_id) > 0
        await ra.wait_for(lambda: bool(ra.identified_by(b.peer_id)))
        await rb.wait_for(lambda: bool(rb.identified_by(a.peer_id)))
        explicit = await a.identify(b.peer_id)
    for info, other in ((ra.identified_by(b.peer_id)[0], b), (rb.identified_by(a.peer_id)[0], a)):
        assert info.agent_version == AGENT_VERSION
        assert info.protocol_version == "ipfs/0.1.0"
        assert {PING_PROTOCOL, IDENTIFY_PROTOCOL, IDENTIFY_PUSH_PROTOCOL} <= set(info.protocols)
        assert info.public_key == other._key.public_key()
        assert info.record_seq is not None
    assert list(explicit.listen_addrs) == b.listen_addrs()
    # b saw a connect from a's listening socket (the dial reused it).
    assert str(explicit.observed_addr) == str(a.listen_addrs()[0])
    assert [(str(addr), n) for addr, n in a.observed_addrs.addrs()] == [
        (str(a.listen_addrs()[0]), 1)
    ]
    assert b.peerstore.get(a.peer_id).agent_version == AGENT_VERSION  # type: ignore[union-attr]


async def test_connection_reuse(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await quic_hosts()
    b, _ = await quic_hosts()
    async with asyncio.timeout(10):
        first = await a.connect(_dial_addr(b))
        second = await a.connect(_dial_addr(b))
        stream = await a.new_stream(b.peer_id, [PING_PROTOCOL])
    assert first is second is stream.conn
    assert len(a.connections()) == 1
    stream.reset()


async def test_simultaneous_dials_merge(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await quic_hosts()
    b, rb = await quic_hosts()
    async with asyncio.timeout(10):
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(a.connect(_dial_addr(b))) for _ in range(5)]
        await rb.wait_for(lambda: bool(rb.connected))
    assert len({id(t.result()) for t in tasks}) == 1
    assert len(a.connections()) == 1
    assert len(b.connections()) == 1


async def test_dials_from_both_sides_at_once(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await quic_hosts()
    b, _ = await quic_hosts()
    async with asyncio.timeout(10):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(a.connect(_dial_addr(b)))
            tg.create_task(b.connect(_dial_addr(a)))
        assert 1 <= len(a.connections()) <= 2
        assert await a.ping(b.peer_id) > 0
        assert await b.ping(a.peer_id) > 0


async def test_wrong_peer_id_is_refused(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await quic_hosts()
    b, _ = await quic_hosts()
    other = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    async with asyncio.timeout(10):
        with pytest.raises(PeerIdMismatch):
            await a.connect(f"{b.listen_addrs()[0]}/p2p/{other}")
        assert await a.connect(_dial_addr(b))


async def test_unknown_protocol_and_host_keeps_serving(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await quic_hosts()
    b, _ = await quic_hosts()
    async with asyncio.timeout(10):
        await a.connect(_dial_addr(b))
        with pytest.raises(ProtocolNotSupported):
            await a.new_stream(b.peer_id, ["/unknown/1.0.0"])
        assert await a.ping(b.peer_id) > 0


async def test_raising_handler_resets_only_its_stream(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await quic_hosts()
    b, _ = await quic_hosts()

    async def bad(stream: NegotiatedStream) -> None:
        await stream.readexactly(4)
        raise RemoteProtocolError("nonsense from the peer")

    b.set_stream_handler("/bad/1.0.0", bad)
    async with asyncio.timeout(10):
        await a.connect(_dial_addr(b))
        stream = await a.new_stream(b.peer_id, ["/bad/1.0.0"])
        stream.write(b"junk")
        await stream.drain()
        with pytest.raises(StreamReset):
            await stream.read()
        assert await a.ping(b.peer_id) > 0
    assert b.peers() == [a.peer_id]


async def test_oversized_varint_on_identify_push(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await quic_hosts()
    b, rb = await quic_hosts()
    async with asyncio.timeout(10):
        await a.connect(_dial_addr(b))
        await rb.wait_for(lambda: bool(rb.identified_by(a.peer_id)))
        count = len(rb.identified)
        stream = await a.new_stream(b.peer_id, [IDENTIFY_PUSH_PROTOCOL])
        stream.write(encode_uvarint(1 << 50) + b"x" * 100)
        await stream.drain()
        with pytest.raises(StreamReset):
            await stream.read()
        assert await a.ping(b.peer_id) > 0
    assert len(rb.identified) == count


async def test_truncated_ping_payload_resets_stream(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await quic_hosts()
    b, _ = await quic_hosts()
    async with asyncio.timeout(10):
        await a.connect(_dial_addr(b))
        stream = await a.new_stream(b.peer_id, [PING_PROTOCOL])
        stream.write(b"\xff" * 31)
        await stream.close()
        with pytest.raises((StreamReset, StreamClosed)):
            await stream.readexactly(32)
        assert await a.ping(b.peer_id) > 0


async def test_hostile_identify_responder(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await quic_hosts()
    b, _ = await quic_hosts()

    async def liar(stream: NegotiatedStream) -> None:
        stream.write(encode_uvarint(10 * 1024 * 1024))
        await stream.drain()
        await stream.close()

    b.set_stream_handler(IDENTIFY_PROTOCOL, liar)
    async with asyncio.timeout(10):
        await a.connect(_dial_addr(b))
        with pytest.raises(MessageTooLarge):
            await a.identify(b.peer_id)
        assert await a.ping(b.peer_id) > 0


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_and_dual_listen(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await quic_hosts(listen=("/ip4/127.0.0.1/udp/0/quic-v1", "/ip6/::1/udp/0/quic-v1"))
    b, rb = await quic_hosts(listen=("/ip6/::1/udp/0/quic-v1",))
    v6 = [str(x) for x in a.listen_addrs() if str(x).startswith("/ip6/")]
    assert v6 and v6[0].startswith("/ip6/::1/udp/")
    async with asyncio.timeout(10):
        await b.connect(f"{v6[0]}/p2p/{a.peer_id}")
        assert await b.ping(a.peer_id) > 0
        info = await b.identify(a.peer_id)
    assert {str(x) for x in info.listen_addrs} == {str(x) for x in a.listen_addrs()}


async def test_disconnect_then_redial_by_peer_id(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, ra = await quic_hosts()
    b, rb = await quic_hosts()
    async with asyncio.timeout(10):
        await a.connect(_dial_addr(b))
        assert await a.ping(b.peer_id) > 0
        await rb.wait_for(lambda: rb.connected == [a.peer_id])
        b.disconnect(a.peer_id)
        await ra.wait_for(lambda: ra.disconnected == [b.peer_id])
        await rb.wait_for(lambda: rb.disconnected == [a.peer_id])
        assert a.peers() == [] and b.peers() == []
        # The peerstore kept b's address, so ping redials by peer ID.
        assert await a.ping(b.peer_id) > 0
        await ra.wait_for(lambda: ra.connected == [b.peer_id, b.peer_id])
    assert len(a.connections()) == 1


async def test_host_shutdown_closes_connections(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    b, rb = await quic_hosts()
    async with asyncio.timeout(10):
        async with Host(Ed25519PrivateKey.generate()) as c:
            await c.listen(["/ip4/127.0.0.1/udp/0/quic-v1"])
            await c.connect(_dial_addr(b))
            await rb.wait_for(lambda: c.peer_id in rb.connected)
        assert c.connections() == []
        await rb.wait_for(lambda: c.peer_id in rb.disconnected)
