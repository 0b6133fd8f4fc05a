"""A and C are connected only through relay R on loopback; DCUtR upgrades
them to a direct QUIC connection: C (dialled through the relay) starts,
A dials as the QUIC client, the host marks the result punched, new streams
use it, and the relayed connection closes once idle."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest

from overlay.errors import StreamReset
from overlay.host import Host
from overlay.host.transport_types import Connection
from overlay.identity import Ed25519PrivateKey
from overlay.nat.dcutr_core import DcutrConfig
from overlay.nat.dcutr_service import DcutrService, DcutrServiceConfig
from overlay.relay.client import RelayClient
from overlay.relay.server import RelayServer
from overlay.relay.server_core import RelayLimits
from tests.waiting import wait_until

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


@dataclass
class Trio:
    a: Host
    relay: Host
    c: Host
    dcutr_a: DcutrService
    dcutr_c: DcutrService

    def circuit_addr(self) -> str:
        return (f"{self.relay.listen_addrs()[0]}/p2p/{self.relay.peer_id}"
                f"/p2p-circuit/p2p/{self.c.peer_id}")


def _config(unilateral: bool = False, grace: float = 30.0) -> DcutrServiceConfig:
    return DcutrServiceConfig(core=DcutrConfig(allow_private=True), unilateral=unilateral,
                              relayed_grace=grace, idle_check=0.05)


@pytest.fixture
def service_config() -> DcutrServiceConfig:
    return _config()


@pytest.fixture
async def trio(service_config: DcutrServiceConfig) -> AsyncIterator[Trio]:
    async with AsyncExitStack() as stack:
        relay_key = Ed25519PrivateKey.generate()
        relay = await stack.enter_async_context(Host(relay_key))
        await relay.listen([LOOPBACK])
        await stack.enter_async_context(RelayServer(relay, relay_key, RelayLimits()))
        hosts = []
        services = []
        for seed in range(2):
            host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
            await host.listen([LOOPBACK])
            hosts.append(host)
            services.append(await stack.enter_async_context(
                DcutrService(host, service_config, rng=random.Random(seed))))
        a, c = hosts
        client = await stack.enter_async_context(RelayClient(c))
        client.observe_stops(services[1].on_stop_hint)
        await c.connect(f"{relay.listen_addrs()[0]}/p2p/{relay.peer_id}")
        await client.reserve(relay.peer_id)
        yield Trio(a, relay, c, services[0], services[1])


def _conns(host: Host, peer: object) -> list[Connection]:
    return [c for c in host.connections() if c.remote_peer == peer]


async def test_dcutr_upgrades_a_relayed_connection_to_a_punched_direct_one(trio: Trio) -> None:
    a, c = trio.a, trio.c
    async with asyncio.timeout(30):
        relayed = await a.connect(trio.circuit_addr())
        assert relayed.path == "relayed"
        # Each side marks its direct connection punched before its session
        # ends, and a session's end sets its service's ``activity``.
        await wait_until(lambda: any(a.is_punched(x) for x in _conns(a, c.peer_id))
                         and any(c.is_punched(x) for x in _conns(c, a.peer_id)),
                         trio.dcutr_a.activity, trio.dcutr_c.activity, timeout=15)
        direct_a = a.best_connection(c.peer_id)
        direct_c = c.best_connection(a.peer_id)
        assert direct_a is not None and direct_a.path == "direct" and a.is_punched(direct_a)
        assert direct_c is not None and direct_c.path == "direct" and c.is_punched(direct_c)
        # A dialled as the QUIC client, C accepted as the server.
        assert direct_a.is_initiator and not direct_c.is_initiator
        assert (await a.ping_service.ping(c.peer_id)).path == "direct"
        # The relayed connection had no stream left open: it closes.
        await relayed.wait_closed()
        assert [x.path for x in _conns(a, c.peer_id)] == ["direct"]
        assert trio.dcutr_c.counters["punched"] == 1
        # A records its success once the connection stayed open ``confirm_wait``.
        await wait_until(lambda: trio.dcutr_a.counters["punched"] == 1,
                         trio.dcutr_a.activity, timeout=10)
        recent = trio.dcutr_c.status()["recent"]
        assert recent[-1]["ok"] and recent[-1]["how"] == "punched"
        assert recent[-1]["attempts"] == 1 and recent[-1]["rtt_ms"] is not None
        # The relay's stop CONNECT named where A connects from: C punched
        # there at once (three packets), before the relayed connection was up.
        assert trio.dcutr_c.counters["hints"] == 1
        assert trio.dcutr_c.counters["hint_packets"] == 3


async def test_a_malformed_message_costs_the_stream_and_is_counted() -> None:
    async with AsyncExitStack() as stack:
        relay_key = Ed25519PrivateKey.generate()
        relay = await stack.enter_async_context(Host(relay_key))
        await relay.listen([LOOPBACK])
        await stack.enter_async_context(RelayServer(relay, relay_key, RelayLimits()))
        x = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
        c = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
        for host in (x, c):
            await host.listen([LOOPBACK])
        dcutr = await stack.enter_async_context(DcutrService(c, _config()))
        client = await stack.enter_async_context(RelayClient(c))
        await c.connect(f"{relay.listen_addrs()[0]}/p2p/{relay.peer_id}")
        await client.reserve(relay.peer_id)
        async with asyncio.timeout(20):
            relayed = await x.connect(f"{relay.listen_addrs()[0]}/p2p/{relay.peer_id}"
                                      f"/p2p-circuit/p2p/{c.peer_id}")
            # C (dialled through the relay) tries first; X speaks no DCUtR.
            await wait_until(lambda: dcutr.counters["failed"] == 1, dcutr.activity, timeout=15)
            assert "cannot open" in dcutr.status()["recent"][-1]["how"]
            stream = await x.open_stream_on(relayed, ["/libp2p/dcutr"])
            stream.write(b"\x05\x08\xc8\x01\x12\x00")  # type 200: no such message
            await stream.drain()
            with pytest.raises(StreamReset):
                while await stream.read():
                    pass
            await wait_until(lambda: dcutr.counters["protocol_errors"] == 1, dcutr.activity,
                             timeout=15)
            assert "unknown DCUtR message type 200" in dcutr.status()["recent"][-1]["how"]
            assert dcutr.counters["punch_packets"] == 0
            assert not relayed.is_closed  # only the stream paid


async def test_dialled_through_relays_both_ways_at_once_one_side_yields(
        trio: Trio) -> None:
    a, c = trio.a, trio.c
    async with asyncio.timeout(30), RelayClient(a) as a_client:
        await a.connect(f"{trio.relay.listen_addrs()[0]}/p2p/{trio.relay.peer_id}")
        await a_client.reserve(trio.relay.peer_id)
        a_circuit = (f"{trio.relay.listen_addrs()[0]}/p2p/{trio.relay.peer_id}"
                     f"/p2p-circuit/p2p/{a.peer_id}")
        # Each side gets an inbound relayed connection: both start as initiator.
        await asyncio.gather(a.connect(trio.circuit_addr()), c.connect(a_circuit))
        smaller, larger = sorted([(trio.dcutr_a, a), (trio.dcutr_c, c)],
                                 key=lambda pair: pair[1].peer_id.to_bytes())
        await wait_until(lambda: smaller[0].counters["punched"] == 1
                         and larger[0].counters["punched"] == 1,
                         trio.dcutr_a.activity, trio.dcutr_c.activity, timeout=15)
        # One initiator and one responder.  Which is which is not fixed: the
        # smaller ID keeps the role when both sessions had started, but
        # under load one side's CONNECT can arrive before its peer's own
        # relayed connection is even adopted, and then that side answers.
        roles = {smaller[0].status()["recent"][-1]["role"],
                 larger[0].status()["recent"][-1]["role"]}
        assert roles == {"initiator", "responder"}
        assert smaller[0].counters["failed"] == larger[0].counters["failed"] == 0
        assert any(a.is_punched(x) for x in _conns(a, c.peer_id))
        assert any(c.is_punched(x) for x in _conns(c, a.peer_id))


async def test_a_direct_connection_the_peer_closes_at_once_is_no_success(trio: Trio) -> None:
    # As py-libp2p does with QUIC connections it did not dial itself: C
    # closes every direct connection the moment it is adopted.
    from overlay.host.events import HostListener

    a, c = trio.a, trio.c

    def refuse(conn: Connection) -> None:
        if conn.path == "direct":
            conn.close(0, "not dialled by us")

    c.add_listener(HostListener(opened=refuse))
    async with asyncio.timeout(30):
        relayed = await a.connect(trio.circuit_addr())
        await wait_until(lambda: bool(trio.dcutr_a.outcomes), trio.dcutr_a.activity, timeout=15)
        done = trio.dcutr_a.outcomes[-1]
        assert not done.ok and "closed the direct connection at once" in done.how
        assert trio.dcutr_a.counters["punched"] == 0 and trio.dcutr_a.counters["failed"] == 1
        assert not relayed.is_closed  # nothing retired the relayed connection
        best = a.best_connection(c.peer_id)
        assert best is not None and best.path == "relayed"
