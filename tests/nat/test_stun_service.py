"""STUN on the QUIC socket over loopback: an introducer answers binding
requests on its QUIC port while QUIC keeps working there."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator

import pytest

from overlay.host import Host
from overlay.identity import Ed25519PrivateKey
from overlay.nat.agent import AgentConfig
from overlay.nat.behaviour import Behaviour
from overlay.nat.config import StunServiceConfig
from overlay.nat.stun import BindingResponse, RetransmitConfig, decode_stun, encode_binding_request
from overlay.nat.stun_service import StunService

FAST = AgentConfig(retransmit=RetransmitConfig(initial_rto=0.1, max_transmissions=3))
"""Loopback answers at once; a silent server times out after 0.7 s."""


async def started_host() -> Host:
    host = Host(Ed25519PrivateKey.generate())
    await host.__aenter__()
    await host.listen(["/ip4/127.0.0.1/udp/0/quic-v1"])
    return host


@pytest.fixture
async def hosts() -> AsyncIterator[tuple[Host, Host]]:
    a = await started_host()
    b = await started_host()
    try:
        yield a, b
    finally:
        await b.__aexit__(None, None, None)
        await a.__aexit__(None, None, None)


def port_of(host: Host) -> int:
    return host.endpoints()[0].local_address[1]


async def test_introducer_answers_on_its_quic_port_and_quic_still_works(
        hosts: tuple[Host, Host]) -> None:
    introducer, node = hosts
    server = f"127.0.0.1:{port_of(introducer)}"
    async with StunService(introducer, StunServiceConfig(serve=True, agent=FAST)) as serving, \
            StunService(node, StunServiceConfig(servers=(server,), agent=FAST)) as asking:
        async with asyncio.timeout(10):
            await asking.refresh()
        report = asking.report()
        [sock] = report.sockets
        [obs] = sock.observations
        assert obs.server == ("127.0.0.1", port_of(introducer))
        assert obs.mapped == ("127.0.0.1", port_of(node)) and obs.from_xor
        assert report.public[0].address == obs.mapped
        assert report.public[0].sources == (f"stun {server}",)
        # Our own address: no NAT between loopback sockets.
        assert report.mapping.behaviour is Behaviour.NO_NAT
        assert serving.report().answered >= 1

        # QUIC on the same sockets, both ways, while STUN is hooked in.
        addr = f"/ip4/127.0.0.1/udp/{port_of(introducer)}/quic-v1/p2p/{introducer.peer_id}"
        await node.connect(addr)
        async with asyncio.timeout(10):
            rtt = await node.ping(introducer.peer_id)
            await asking.refresh()
        assert rtt > 0 and asking.report().sockets[0].observations[0].mapped[1] == port_of(node)
        async with asyncio.timeout(10):
            assert await introducer.ping(node.peer_id) > 0


async def test_junk_datagrams_break_nothing(hosts: tuple[Host, Host]) -> None:
    introducer, node = hosts
    target = ("127.0.0.1", port_of(introducer))
    async with StunService(introducer, StunServiceConfig(serve=True, agent=FAST)) as serving:
        rng = random.Random(5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.bind(("127.0.0.1", 0))
            ours = raw.getsockname()
            junk = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300)))
                    for _ in range(200)]
            junk += [b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12) + b"\xff" * 8,
                     b"\x00" * 1500, b"\x01\x01" + bytes(18)]
            for data in junk:
                raw.sendto(data, target)
            # A real request after the junk is still answered.
            raw.sendto(encode_binding_request(bytes(range(12))), target)
            raw.setblocking(False)
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(5):
                reply = await loop.sock_recv(raw, 2048)
        decoded = decode_stun(reply)
        assert isinstance(decoded, BindingResponse)
        assert decoded.mapped == ours
        addr = f"/ip4/127.0.0.1/udp/{target[1]}/quic-v1/p2p/{introducer.peer_id}"
        await node.connect(addr)
        async with asyncio.timeout(10):
            assert await node.ping(introducer.peer_id) > 0
        assert serving.report().answered >= 1


async def test_silent_server_is_reported_as_a_failure(hosts: tuple[Host, Host]) -> None:
    _, node = hosts
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        server = f"127.0.0.1:{silent.getsockname()[1]}"
        async with StunService(node, StunServiceConfig(servers=(server,), agent=FAST)) as svc:
            async with asyncio.timeout(10):
                await svc.refresh()
            [sock] = svc.report().sockets
            assert sock.observations == ()
            assert sock.failures == ((("127.0.0.1", silent.getsockname()[1]),
                                      "no answer to 3 requests"),)
            assert svc.report().mapping.behaviour is Behaviour.UNKNOWN


async def test_non_serving_node_does_not_answer(hosts: tuple[Host, Host]) -> None:
    quiet, node = hosts
    server = f"127.0.0.1:{port_of(quiet)}"
    async with StunService(quiet, StunServiceConfig(agent=FAST)) as idle, \
            StunService(node, StunServiceConfig(servers=(server,), agent=FAST)) as asking:
        async with asyncio.timeout(10):
            await asking.refresh()
        assert asking.report().sockets[0].observations == ()
        assert idle.report().answered == 0
