"""The RFC 5780 phases of a round against a two-address server on loopback
(127.0.0.1 and 127.0.0.2): no NAT in between, so every change request's
answer gets through and the filtering is endpoint-independent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from aioice import stun as aioice_stun

from overlay.host import Host
from overlay.identity import Ed25519PrivateKey
from overlay.nat.agent import AgentConfig
from overlay.nat.behaviour import Behaviour
from overlay.nat.config import StunServiceConfig
from overlay.nat.stun import BindingRequest, RetransmitConfig, decode_stun
from overlay.nat.stun_service import StunService

FAST = AgentConfig(retransmit=RetransmitConfig(initial_rto=0.1, max_transmissions=3))
IPS = ("127.0.0.1", "127.0.0.2")


class _Answer(asyncio.DatagramProtocol):
    def __init__(self, server: FakeRfc5780Server, index: tuple[int, int]) -> None:
        self.server = server
        self.index = index
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.received(self.index, data, addr)


class FakeRfc5780Server:
    """Four sockets: two IPs × two ports, answering as coturn does (from
    the socket a CHANGE-REQUEST asks for, with OTHER-ADDRESS)."""

    def __init__(self) -> None:
        self.sockets: dict[tuple[int, int], _Answer] = {}
        self.ports: tuple[int, int] = (0, 0)
        self.requests: list[tuple[tuple[int, int], BindingRequest]] = []

    async def start(self, stack: AsyncExitStack) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(20):  # the same two ports must be free on both IPs
            opened: dict[tuple[int, int], _Answer] = {}
            try:
                for port_index in (0, 1):
                    port = 0
                    for ip_index, ip in enumerate(IPS):
                        transport, proto = await loop.create_datagram_endpoint(
                            lambda i=(ip_index, port_index): _Answer(self, i),  # type: ignore[misc]
                            local_addr=(ip, port))
                        proto.transport = transport
                        opened[(ip_index, port_index)] = proto
                        port = transport.get_extra_info("sockname")[1]
            except OSError:
                for proto in opened.values():
                    assert proto.transport is not None
                    proto.transport.close()
                continue
            self.sockets = opened
            for proto in opened.values():
                transport = proto.transport
                assert transport is not None
                stack.callback(transport.close)
            self.ports = (self.port_of(0, 0), self.port_of(0, 1))
            return
        pytest.skip("no port pair free on 127.0.0.1 and 127.0.0.2")

    def port_of(self, ip_index: int, port_index: int) -> int:
        transport = self.sockets[(ip_index, port_index)].transport
        assert transport is not None
        return int(transport.get_extra_info("sockname")[1])

    def received(self, index: tuple[int, int], data: bytes, addr: tuple[str, int]) -> None:
        request = decode_stun(data)
        assert isinstance(request, BindingRequest)
        self.requests.append((index, request))
        ip_index = 1 - index[0] if request.change_ip else index[0]
        port_index = 1 - index[1] if request.change_port else index[1]
        answer = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.RESPONSE,
                                     request.transaction_id)
        answer.attributes["XOR-MAPPED-ADDRESS"] = addr
        answer.attributes["OTHER-ADDRESS"] = (IPS[1 - index[0]], self.ports[1 - index[1]])
        answer.add_fingerprint()
        transport = self.sockets[(ip_index, port_index)].transport
        assert transport is not None
        transport.sendto(bytes(answer), addr)


@pytest.fixture
async def server_and_host() -> AsyncIterator[tuple[FakeRfc5780Server, Host]]:
    async with AsyncExitStack() as stack:
        server = FakeRfc5780Server()
        await server.start(stack)
        host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
        await host.listen(["/ip4/127.0.0.1/udp/0/quic-v1"])
        yield server, host


async def test_filtering_tests_run_once_before_the_other_ip_is_asked(
        server_and_host: tuple[FakeRfc5780Server, Host]) -> None:
    server, host = server_and_host
    primary = f"127.0.0.1:{server.ports[0]}"
    config = StunServiceConfig(servers=(primary,), agent=FAST)
    async with StunService(host, config) as service:
        async with asyncio.timeout(20):
            await service.refresh()
            await service.refresh()
        report = service.report(local_ips=["127.0.0.1"])
    # Rounds never overlap, so the first four requests are the first round
    # (ours or the one the service starts by itself).
    first_round = server.requests[:4]
    kinds = [(index, req.change_ip, req.change_port) for index, req in first_round]
    # Plain to the primary, the two change requests, then plain to the
    # other IP at the primary port; never the other IP's other port.
    assert kinds[0] == ((0, 0), False, False)
    assert sorted(kinds[1:3]) == [((0, 0), False, True), ((0, 0), True, True)]
    assert kinds[3:] == [((1, 0), False, False)]
    later = [(req.change_ip, req.change_port) for _, req in server.requests[len(first_round):]]
    # Later rounds (the service's own first one may run among them) send
    # plain requests only: no filtering test again.
    assert later and set(later) == {(False, False)}
    [sock] = report.sockets
    assert {obs.server for obs in sock.observations} == {
        ("127.0.0.1", server.ports[0]), ("127.0.0.2", server.ports[0])}
    assert report.filtering.behaviour is Behaviour.ENDPOINT_INDEPENDENT
    assert report.mapping.behaviour is Behaviour.NO_NAT
