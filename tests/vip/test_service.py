"""Two hosts on loopback with the virtual-IP service and an in-memory
TUN: the paths (DATAGRAM, stream fallback), the v4 translation and the
drop of forged sources."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest

from overlay.host.config import HostConfig
from overlay.host.host import Host
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.transport import TransportConfig
from overlay.transport.connection import QuicConn
from overlay.vip import SELF_V4, parse_packet, vip6_of
from overlay.vip.router import VipRouter
from overlay.vip.service import VipService
from tests.vip.packets import udp4, udp6, valid_v4_checksums


class Sink:
    def __init__(self) -> None:
        self.packets: asyncio.Queue[bytes] = asyncio.Queue()

    def write(self, packet: bytes) -> None:
        self.packets.put_nowait(packet)

    async def next(self) -> bytes:
        async with asyncio.timeout(5):
            return await self.packets.get()


@dataclass
class Node:
    host: Host
    service: VipService
    sink: Sink


async def make_nodes(stack: AsyncExitStack, b_datagrams: bool = True) -> tuple[Node, Node]:
    made = []
    for datagrams in (True, b_datagrams):
        config = HostConfig(transport=TransportConfig(
            max_datagram_frame_size=65535 if datagrams else None))
        host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate(), config))
        await host.listen(["/ip4/127.0.0.1/udp/0/quic-v1"])
        sink = Sink()
        service = await stack.enter_async_context(
            VipService(host, VipRouter(host.peer_id), sink))
        made.append(Node(host, service, sink))
    a, b = made
    a.host.peerstore.add_addrs(b.host.peer_id, b.host.listen_addrs())
    return a, b


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[Node, Node]]:
    async with AsyncExitStack() as stack:
        yield await make_nodes(stack)


def v6(peer: PeerId) -> str:
    return str(vip6_of(peer))


async def test_v6_packet_goes_as_a_datagram_and_arrives(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.service.router.learn(b.host.peer_id)
    await a.host.connection_to(b.host.peer_id)
    packet = udp6(v6(a.host.peer_id), v6(b.host.peer_id), b"over a datagram")
    a.service.from_tun(packet)
    assert await b.sink.next() == packet
    assert a.service.counts["datagram_out"] == 1 and b.service.counts["datagram_in"] == 1
    # The answer finds its way back: b learned a from the packet.
    reply = udp6(v6(b.host.peer_id), v6(a.host.peer_id), b"reply")
    b.service.from_tun(reply)
    assert await a.sink.next() == reply


async def test_without_a_connection_the_stream_dials_and_carries(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.service.router.learn(b.host.peer_id)
    assert a.host.best_connection(b.host.peer_id) is None
    first = udp6(v6(a.host.peer_id), v6(b.host.peer_id), b"first")
    a.service.from_tun(first)
    assert await b.sink.next() == first
    assert a.service.counts["stream_out"] == 1
    # Too large for one datagram: the stream, even now a connection exists.
    conn = a.host.best_connection(b.host.peer_id)
    assert isinstance(conn, QuicConn) and conn.datagram_capacity > 0
    big = udp6(v6(a.host.peer_id), v6(b.host.peer_id), b"x" * (conn.datagram_capacity + 100))
    a.service.from_tun(big)
    assert await b.sink.next() == big
    assert a.service.counts["stream_out"] == 2 and b.service.counts["stream_in"] == 2


async def test_v4_is_translated_between_the_two_tables(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    await a.host.connection_to(b.host.peer_id)
    v4_of_b, _ = a.service.router.addresses_of(b.host.peer_id, 0.0)
    assert v4_of_b is not None
    a.service.from_tun(udp4(str(SELF_V4), str(v4_of_b), b"v4"))
    got = await b.sink.next()
    info = parse_packet(got)
    assert info.destination == SELF_V4
    assert info.source == b.service.router.allocator.lookup(a.host.peer_id)
    assert info.source in ipaddress.IPv4Network("100.64.0.0/10")
    assert valid_v4_checksums(got)


async def test_forged_sources_are_dropped(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    conn = await a.host.connection_to(b.host.peer_id)
    assert isinstance(conn, QuicConn)
    someone = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    # A modified peer bypasses its own checks and sends straight on the wire.
    assert conn.send_datagram(udp6(v6(someone), v6(b.host.peer_id), b"forged"))
    assert conn.send_datagram(udp4("100.64.0.77", str(SELF_V4), b"forged v4"))
    honest = udp6(v6(a.host.peer_id), v6(b.host.peer_id), b"honest")
    assert conn.send_datagram(honest)
    assert await b.sink.next() == honest
    assert b.service.counts["dropped_inbound"] == 2
    assert b.service.router.drops["forged source"] == 2
    assert b.sink.packets.empty()


async def test_a_peer_without_datagrams_gets_the_stream() -> None:
    async with AsyncExitStack() as stack:
        a, b = await make_nodes(stack, b_datagrams=False)
        await a.host.connection_to(b.host.peer_id)
        a.service.router.learn(b.host.peer_id)
        packets = [udp6(v6(a.host.peer_id), v6(b.host.peer_id), bytes([i])) for i in range(3)]
        for packet in packets:
            a.service.from_tun(packet)
        assert [await b.sink.next() for _ in packets] == packets
        assert a.service.counts["datagram_out"] == 0 and a.service.counts["stream_out"] == 3


async def test_an_unknown_vip6_is_looked_up_in_the_peerstore(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    # a never saw b's address as a vIP, but its peerstore knows b.
    assert a.service.router.peer_of_v6(vip6_of(b.host.peer_id)) is None
    packet = udp6(v6(a.host.peer_id), v6(b.host.peer_id), b"found")
    a.service.from_tun(packet)
    assert await b.sink.next() == packet
