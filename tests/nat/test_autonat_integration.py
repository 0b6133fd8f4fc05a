"""AutoNAT v2 over real QUIC on loopback: a client and a server host on
127.0.0.x with the lab switch on (loopback is not a public address)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from overlay.errors import DialError, OverlayError
from overlay.host import Host
from overlay.host.transport_types import Connection
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.multiaddrs import QuicAddr, multiaddr_to_bytes, parse_quic_multiaddr
from overlay.nat.autonat_messages import (
    DIAL_BACK_PROTOCOL,
    DIAL_REQUEST_PROTOCOL,
    DialBack,
    DialDataRequest,
    DialRequest,
    DialResponse,
    DialStatus,
    ResponseStatus,
    encode_dial_back,
)
from overlay.nat.autonat_server import fresh_socket_connector, read_message, write_message
from overlay.nat.autonat_service import AutoNATService, lab_config
from overlay.nat.reachability import Reachability, ReachabilityState
from overlay.wire.varint import frame

CONFIG = lab_config(probe=False, dial_timeout=3.0, request_timeout=10.0)


async def started_host(ip: str) -> Host:
    host = Host(Ed25519PrivateKey.generate())
    await host.__aenter__()
    await host.listen([f"/ip4/{ip}/udp/0/quic-v1"])
    return host


def addr_of(host: Host) -> str:
    return str(host.listen_addrs()[0])


def free_udp_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Lab:
    server_host: Host
    client_host: Host
    server: AutoNATService
    client: AutoNATService


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    server_host = await started_host("127.0.0.1")
    client_host = await started_host("127.0.0.2")
    try:
        async with AutoNATService(server_host, CONFIG, rng=random.Random(1)) as server, \
                AutoNATService(client_host, CONFIG, rng=random.Random(2)) as client:
            await client_host.connect(f"{addr_of(server_host)}/p2p/{server_host.peer_id}")
            yield Lab(server_host, client_host, server, client)
    finally:
        await client_host.__aexit__(None, None, None)
        await server_host.__aexit__(None, None, None)


async def test_real_listen_address_is_confirmed_by_a_dial_back(lab: Lab) -> None:
    changes: list[ReachabilityState] = []
    lab.client.on_change(changes.append)
    addr = addr_of(lab.client_host)
    async with asyncio.timeout(15):
        assert await lab.client.check(lab.server_host.peer_id, addr) is True
    assert lab.client.reachability is Reachability.PUBLIC
    assert lab.client.confirmed_addrs == [addr]
    assert [c.reachability for c in changes] == [Reachability.PUBLIC]
    assert lab.server.server.core.counters == {"dialed": 1}
    # The dial-back came over a fresh connection, which the server closed:
    # the client keeps exactly its own connection to the server.
    assert lab.client_host.peers() == [lab.server_host.peer_id]


async def test_address_where_nothing_listens_is_refuted_and_not_advertised(lab: Lab) -> None:
    dead = f"/ip4/127.0.0.2/udp/{free_udp_port('127.0.0.2')}/quic-v1"
    async with asyncio.timeout(15):
        assert await lab.client.check(lab.server_host.peer_id, dead) is False
    assert lab.client.reachability is Reachability.PRIVATE
    assert lab.client.state.refuted == (dead,)
    assert dead not in {str(a) for a in lab.client_host.advertised_addrs()}


async def test_third_party_address_costs_dial_data_and_nothing_without_it(lab: Lab) -> None:
    third = await started_host("127.0.0.3")
    try:
        stream = await lab.client_host.new_stream(lab.server_host.peer_id,
                                                  [DIAL_REQUEST_PROTOCOL])
        await write_message(stream, DialRequest((multiaddr_to_bytes(addr_of(third)),), 7))
        async with asyncio.timeout(10):
            asked = await read_message(stream)
        assert isinstance(asked, DialDataRequest)
        assert asked.addr_idx == 0 and 30_000 <= asked.num_bytes <= 100_000
        stream.reset()  # we refuse to pay
        # The server dialled nobody, and the client's connection survives.
        assert third.connections() == []
        assert lab.client_host.peers() == [lab.server_host.peer_id]
    finally:
        await third.__aexit__(None, None, None)


async def test_paid_third_party_dial_reaches_nobody_who_is_not_the_client(lab: Lab) -> None:
    third = await started_host("127.0.0.3")
    try:
        async with asyncio.timeout(15):
            # The client pays; the server dials, but the third party cannot
            # prove the client's peer ID, so the dial fails.
            assert await lab.client.check(lab.server_host.peer_id, addr_of(third)) is False
        assert lab.client.counters["dial_data_bytes_sent"] == 1
    finally:
        await third.__aexit__(None, None, None)


async def test_client_refuses_to_pay_more_than_its_limit(lab: Lab) -> None:
    stingy_host = await started_host("127.0.0.5")
    try:
        config = lab_config(probe=False, client=lab_config().client.__class__(
            lab=True, max_dial_data=1000))
        async with AutoNATService(stingy_host, config) as stingy:
            await stingy_host.connect(f"{addr_of(lab.server_host)}/p2p/{lab.server_host.peer_id}")
            async with asyncio.timeout(10):
                result = await stingy.check(lab.server_host.peer_id,
                                            addr_of(lab.client_host))
            assert result is None
            assert stingy.counters == {"DialDataRefused": 1}
    finally:
        await stingy_host.__aexit__(None, None, None)


async def test_malformed_message_costs_only_the_stream(lab: Lab) -> None:
    stream = await lab.client_host.new_stream(lab.server_host.peer_id, [DIAL_REQUEST_PROTOCOL])
    stream.write(frame(b"\xff\xff\xff garbage"))
    await stream.drain()
    with pytest.raises(OverlayError):
        async with asyncio.timeout(10):
            await read_message(stream)
    # Same connection, next request: served.
    async with asyncio.timeout(15):
        assert await lab.client.check(lab.server_host.peer_id, addr_of(lab.client_host)) is True


async def test_response_sent_to_a_server_costs_only_the_stream(lab: Lab) -> None:
    stream = await lab.client_host.new_stream(lab.server_host.peer_id, [DIAL_REQUEST_PROTOCOL])
    await write_message(stream, DialResponse(ResponseStatus.OK, 0, DialStatus.OK))
    with pytest.raises(OverlayError):
        async with asyncio.timeout(10):
            await read_message(stream)
    assert lab.client_host.peers() == [lab.server_host.peer_id]


async def test_dial_back_with_an_unknown_nonce_is_reset(lab: Lab) -> None:
    stream = await lab.server_host.new_stream(lab.client_host.peer_id, [DIAL_BACK_PROTOCOL])
    stream.write(frame(encode_dial_back(DialBack(12345))))
    await stream.drain()
    with pytest.raises(OverlayError):
        async with asyncio.timeout(10):
            data = await stream.read()
            if not data:
                raise AssertionError("the stream closed cleanly instead of being reset")
    assert lab.client.reachability is Reachability.UNKNOWN
    assert lab.server_host.peers() == [lab.client_host.peer_id]


async def test_server_that_does_not_serve_rejects(lab: Lab) -> None:
    never = lab_config(probe=False, serve="never")
    host = await started_host("127.0.0.4")
    try:
        async with AutoNATService(host, never):
            await lab.client_host.connect(f"{addr_of(host)}/p2p/{host.peer_id}")
            async with asyncio.timeout(10):
                assert await lab.client.check(host.peer_id, addr_of(lab.client_host)) is None
            assert lab.client.counters == {"RequestRejected": 1}
    finally:
        await host.__aexit__(None, None, None)


@asynccontextmanager
async def _unreachable(target: QuicAddr, peer: PeerId) -> AsyncIterator[Connection]:
    raise DialError(f"pretend a NAT drops everything sent to {target}")
    yield  # pragma: no cover (makes this a generator)


async def test_refuted_listen_address_is_withheld_and_released_on_exit(lab: Lab) -> None:
    host = await started_host("127.0.0.6")
    try:
        async with AutoNATService(host, CONFIG, connector=_unreachable):
            await lab.client_host.connect(f"{addr_of(host)}/p2p/{host.peer_id}")
            own = addr_of(lab.client_host)
            assert own in {str(a) for a in lab.client_host.advertised_addrs()}
            async with asyncio.timeout(10):
                assert await lab.client.check(host.peer_id, own) is False
            assert lab.client.state.refuted == (own,)
            assert own not in {str(a) for a in lab.client_host.advertised_addrs()}
            # A private node does not serve: the server host's request is rejected.
            assert lab.client.serving() is False
            async with asyncio.timeout(10):
                assert await lab.server.check(lab.client_host.peer_id,
                                              addr_of(lab.server_host)) is None
            assert lab.server.counters == {"RequestRejected": 1}
            # Confirmed again by an honest server: advertised again.
            async with asyncio.timeout(10):
                assert await lab.client.check(lab.server_host.peer_id, own) is True
            # One yes and one no: undecided, so still not advertised as refuted...
            assert lab.client.state.refuted == ()
            assert own in {str(a) for a in lab.client_host.advertised_addrs()}
            assert lab.client.serving() is True  # unknown again: serving
    finally:
        await host.__aexit__(None, None, None)


async def test_confirmed_external_address_is_advertised_until_the_service_stops(
        lab: Lab) -> None:
    # A pretend NAT: the "external" port forwards to the client's real socket.
    real = parse_quic_multiaddr(addr_of(lab.client_host))
    external = f"/ip4/127.0.0.2/udp/{free_udp_port('127.0.0.2')}/quic-v1"

    @asynccontextmanager
    async def port_forward(target: QuicAddr, peer: PeerId) -> AsyncIterator[Connection]:
        assert str(target) == external
        async with fresh_socket_connector(real, peer) as conn:
            yield conn

    host = await started_host("127.0.0.8")
    try:
        async with AutoNATService(host, CONFIG, connector=port_forward):
            await lab.client_host.connect(f"{addr_of(host)}/p2p/{host.peer_id}")
            async with asyncio.timeout(10):
                assert await lab.client.check(host.peer_id, external) is True
            assert lab.client.confirmed_addrs == [external]
            assert external in {str(a) for a in lab.client_host.advertised_addrs()}
        # The client's service stops: the host no longer advertises it.
        await lab.client.__aexit__(None, None, None)
        assert external not in {str(a) for a in lab.client_host.advertised_addrs()}
    finally:
        await host.__aexit__(None, None, None)
