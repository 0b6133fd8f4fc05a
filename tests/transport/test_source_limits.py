"""Inbound limits by source on a real endpoint: Initial floods from one
address or many, attackers that answer Retries, connection caps per IP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from aioquic.quic.packet import QuicPacketType

from overlay.errors import HandshakeError
from overlay.identity import Ed25519PrivateKey
from overlay.transport import QuicConn, QuicEndpoint, TransportConfig

from .conftest import peer_of
from .rawquic import RawClient, header_of, receive, udp_socket

FLOOD_IP = "127.0.0.66"


def inbound(endpoint: QuicEndpoint) -> list[QuicConn]:
    return [c for c in endpoint.connections if not c.is_initiator]


@contextlib.asynccontextmanager
async def flood_sockets(ips: list[str]) -> AsyncIterator[list[socket.socket]]:
    """Sockets for the flood, open for the whole test: a closed one would
    make the kernel answer the endpoint with ICMP port unreachable, which
    ends those handshakes early."""
    socks = [udp_socket(ip) for ip in ips]
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


async def flood_initials(sock: socket.socket, target: tuple[str, int], count: int) -> None:
    """``count`` client Initials, each of a new connection, from ``sock``;
    nothing is ever answered."""
    loop = asyncio.get_running_loop()
    for _ in range(count):
        await loop.sock_sendto(sock, RawClient(sock, target).pending()[0], target)


@pytest.mark.parametrize("legit_ip", ["127.0.0.1", "127.0.0.77"])
async def test_initial_flood_from_one_source_leaves_room(
    legit_ip: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with asyncio.timeout(10):
        key_b = Ed25519PrivateKey.generate()
        async with await QuicEndpoint.create("127.0.0.1", 0, key_b) as b, \
                await QuicEndpoint.create(legit_ip, 0, Ed25519PrivateKey.generate()) as a, \
                flood_sockets([FLOOD_IP]) as (sock,):
            await flood_initials(sock, b.local_address, 300)
            # Datagrams are handled in order: the flood is behind us once
            # the legitimate dial is answered.
            conn = await a.dial(b.local_address, peer_of(key_b))
            assert conn.remote_peer == peer_of(key_b)
            share = b.config.max_handshakes_per_ip // 2
            assert b.admission.handshakes_from(FLOOD_IP) == share
            assert len(inbound(b)) == share + 1
            assert b.limit_hits.counts["quic.retry_per_ip"] == 300 - share
            # Counted every time, logged once a minute.
            lines = [r for r in caplog.records if "quic.retry_per_ip" in r.getMessage()]
            assert len(lines) == 1


async def test_flood_answering_retries_is_held_to_its_share() -> None:
    async with asyncio.timeout(10):
        key_b = Ed25519PrivateKey.generate()
        async with await QuicEndpoint.create("127.0.0.1", 0, key_b) as b, \
                await QuicEndpoint.create("127.0.0.77", 0, Ed25519PrivateKey.generate()) as a:
            async with flood_sockets([FLOOD_IP] * 24) as socks:
                retried = 0
                for sock in socks:
                    client = RawClient(sock, b.local_address)
                    await client.flush()
                    reply = await receive(sock)
                    if header_of(reply).packet_type is QuicPacketType.RETRY:
                        retried += 1
                        client.feed(reply)
                        await client.flush()  # a valid token: past the Retry
                conn = await a.dial(b.local_address, peer_of(key_b))
                assert conn.remote_peer == peer_of(key_b)
                cap = b.config.max_handshakes_per_ip
                assert retried == 24 - cap // 2
                assert b.admission.handshakes_from(FLOOD_IP) == cap
                assert b.limit_hits.counts["quic.handshakes_per_ip"] == 24 - cap


async def test_spoofed_flood_from_many_sources_costs_a_retry_only() -> None:
    async with asyncio.timeout(10):
        key_b = Ed25519PrivateKey.generate()
        config = TransportConfig(max_handshakes=16, retry_threshold=8)
        async with await QuicEndpoint.create("127.0.0.1", 0, key_b, config) as b, \
                await QuicEndpoint.create("127.0.0.77", 0, Ed25519PrivateKey.generate()) as a, \
                flood_sockets([f"127.0.1.{i + 1}" for i in range(20)]) as socks:
            for sock in socks:
                await flood_initials(sock, b.local_address, 4)
            conn = await a.dial(b.local_address, peer_of(key_b))
            assert conn.remote_peer == peer_of(key_b)
            # The flood got no further than the threshold; the legitimate
            # client proved its address and took a slot beyond it.
            assert len(inbound(b)) == 8 + 1
            assert b.limit_hits.counts["quic.retry"] == 20 * 4 - 8 + 1


async def test_connections_per_ip_refused_while_others_connect() -> None:
    async with asyncio.timeout(10):
        key_b = Ed25519PrivateKey.generate()
        config = TransportConfig(max_connections_per_ip=2)
        async with await QuicEndpoint.create("127.0.0.1", 0, key_b, config) as b, \
                await QuicEndpoint.create("127.0.0.77", 0, Ed25519PrivateKey.generate()) as a77, \
                await QuicEndpoint.create("127.0.0.78", 0, Ed25519PrivateKey.generate()) as a78, \
                await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate()) as own:
            held = [await a77.dial(b.local_address) for _ in range(2)]
            accepted = [await b.accept() for _ in range(2)]
            # Refused at once with CONNECTION_REFUSED, not left to time out.
            async with asyncio.timeout(2):
                with pytest.raises(HandshakeError, match=r"code 0x2\)"):
                    await a77.dial(b.local_address)
            assert b.limit_hits.counts["quic.connections_per_ip"] == 1
            assert b.admission.connections_from("127.0.0.77") == 2
            # Another source still connects; so does this machine's own
            # address, past the per-IP cap (exempt).
            await a78.dial(b.local_address)
            for _ in range(3):
                await own.dial(b.local_address)
            # Closing connections gives their slots back.
            for conn in held:
                conn.close()
            for conn in accepted:
                await conn.wait_closed()
            assert b.admission.connections_from("127.0.0.77") == 0
            await a77.dial(b.local_address)
            assert b.admission.connections_from("127.0.0.77") == 1


async def test_own_address_limited_when_exemption_off() -> None:
    async with asyncio.timeout(10):
        config = TransportConfig(max_connections_per_ip=1, exempt_own_address=False)
        async with await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate(),
                                             config) as b, \
                await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate()) as a:
            await a.dial(b.local_address)
            with pytest.raises(HandshakeError, match=r"code 0x2\)"):
                await a.dial(b.local_address)
