"""Service behaviour over real QUIC: modes, protocol IDs, bootstrap from
config, identify-driven tables, dialing by peer ID, the maintenance timer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from overlay.errors import ProtocolNotSupported, StreamReset
from overlay.host import HostListener
from overlay.identity import PeerId
from overlay.kad.keyspace import Contact
from overlay.kad.messages import KadMessage, MessageType
from overlay.kad.republish import RepublishConfig
from overlay.kad.service import KadService
from overlay.kad.service_config import KadServiceConfig
from overlay.kad.service_errors import PeerNotFound

from tests.kadnet.helpers import FAST_KAD, Node, full_addr, kad_nodes, start_node

TIMEOUT = 30.0


async def _until(kad: KadService, predicate: Callable[[], bool]) -> None:
    while not predicate():
        kad.activity.clear()
        await kad.activity.wait()


async def _identified(node: Node, peer: PeerId) -> None:
    changed = asyncio.Event()
    listener = HostListener(identified=lambda p, _i: changed.set() if p == peer else None)
    node.host.add_listener(listener)
    try:
        while node.host.peerstore.get(peer) is None or not node.host.peerstore.protocols(peer):
            changed.clear()
            await changed.wait()
    finally:
        node.host.remove_listener(listener)


async def test_client_mode_asks_but_is_never_listed() -> None:
    def configure(index: int, config: KadServiceConfig) -> KadServiceConfig:
        return replace(config, mode="client") if index == 2 else config

    async with asyncio.timeout(TIMEOUT), kad_nodes(3, configure=configure) as (a, b, client):
        await b.kad.bootstrap([full_addr(a.host)])
        await client.kad.bootstrap([full_addr(a.host)])
        assert client.kad.protocol not in client.host.protocols()
        assert a.host.peer_id in client.kad.table
        await _identified(a, client.host.peer_id)
        assert client.host.peer_id not in a.kad.table
        assert client.host.peer_id not in b.kad.table
        # A client still reads and writes through the servers.
        key = await client.kad.put_immutable(b"from a client")
        assert (await b.kad.get_value(key)).value == b"from a client"
        # Nobody can query it: it does not serve the protocol.  (A lazy
        # proposal is refused with `na` or, as the request bytes that follow
        # it are no protocol name, with a reset.)
        with pytest.raises((ProtocolNotSupported, StreamReset)):
            await a.kad.request(
                Contact.of(client.host.peer_id), KadMessage(MessageType.FIND_NODE, b"\x00\x02ab")
            )


async def test_networks_with_other_protocol_ids_do_not_mix() -> None:
    other = replace(FAST_KAD, protocol_id="/other/kad/1.0.0")

    def configure(index: int, config: KadServiceConfig) -> KadServiceConfig:
        return other if index == 1 else config

    async with asyncio.timeout(TIMEOUT), kad_nodes(3, configure=configure) as (a, stranger, b):
        await b.kad.bootstrap([full_addr(a.host)])
        await a.host.connect(full_addr(stranger.host))
        await _identified(a, stranger.host.peer_id)
        assert stranger.host.peer_id not in a.kad.table
        assert b.host.peer_id in a.kad.table
        assert "/other/kad/1.0.0" in stranger.host.protocols()


async def test_bootstrap_from_config_runs_at_start() -> None:
    async with asyncio.timeout(TIMEOUT), kad_nodes(2) as (a, b):
        await b.kad.bootstrap([full_addr(a.host)])
        late = await start_node(replace(FAST_KAD, bootstrap=(full_addr(a.host),)))
        try:
            await late.kad.bootstrapped.wait()
            assert {a.host.peer_id, b.host.peer_id} <= {c.peer_id for c in late.kad.table.contacts()}
            await _until(a.kad, lambda: late.host.peer_id in a.kad.table)
        finally:
            await late.stop()


async def test_dial_by_peer_id_finds_the_address_through_the_dht() -> None:
    async with asyncio.timeout(TIMEOUT), kad_nodes(3) as (hub, a, c):
        await a.kad.bootstrap([full_addr(hub.host)])
        await c.kad.bootstrap([full_addr(hub.host)])
        target = c.host.peer_id
        # Make `a` forget everything about `c`: only the DHT can tell.
        gone = asyncio.Event()
        a.host.add_listener(HostListener(disconnected=lambda p: gone.set() if p == target else None))
        if target in a.host.peers():
            a.host.disconnect(target)
            await gone.wait()
        a.host.peerstore.remove(target)
        a.kad.table.remove(target)
        assert a.host.peerstore.addrs(target) == []

        conn = await a.kad.connect_peer(target)
        assert conn.remote_peer == target
        assert c.host.listen_addrs()[0] in a.host.peerstore.addrs(target)


async def test_unknown_peer_is_not_found() -> None:
    from overlay.identity import Ed25519PrivateKey

    async with asyncio.timeout(TIMEOUT), kad_nodes(3) as (hub, a, _c):
        await a.kad.bootstrap([full_addr(hub.host)])
        nobody = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
        with pytest.raises(PeerNotFound):
            await a.kad.find_peer(nobody)


async def test_publisher_republishes_when_its_timer_fires() -> None:
    offset = [0.0]

    def wall() -> float:
        return time.time() + offset[0]

    config = replace(FAST_KAD, republish=RepublishConfig(record_republish_interval=3600.0))
    async with asyncio.timeout(TIMEOUT), kad_nodes(1) as (a,):
        publisher = await start_node(config, wall_clock=wall)
        try:
            await publisher.kad.bootstrap([full_addr(a.host)])
            key = await publisher.kad.put_immutable(b"keep me alive")
            first = a.kad.records.get(key, time.time())
            assert first is not None
            served = a.kad.stats.requests_served
            offset[0] = 3601.0
            publisher.kad.wake_timer()
            # The republish is a FIND_NODE then a PUT_VALUE to `a`.
            await _until(
                a.kad,
                lambda: (r := a.kad.records.get(key, time.time())) is not None
                and r.received_at > first.received_at
                and a.kad.stats.requests_served > served,
            )
        finally:
            await publisher.stop()


async def test_full_bucket_checks_its_oldest_entry_and_evicts_it_when_dead() -> None:
    from overlay.kad.keyspace import bucket_index, peer_key
    from overlay.kad.routing import RoutingConfig

    config = replace(FAST_KAD, routing=RoutingConfig(k=1, ping_timeout=10.0))
    async with asyncio.timeout(TIMEOUT), kad_nodes(1, config) as (x,):
        local = x.kad.local_key
        extra: list[Node] = []
        try:
            # Three peers that fall into X's farthest bucket (one in two does).
            far: list[Node] = []
            for _ in range(40):
                node = await start_node()
                extra.append(node)
                if bucket_index(local, peer_key(node.host.peer_id)) == 255:
                    far.append(node)
                    if len(far) == 3:
                        break
            a, b, c = far

            def bucket() -> tuple[int, int, bool]:
                stats = next(s for s in x.kad.table.occupancy() if s.index == 255)
                return stats.size, stats.replacements, stats.pending_check

            await a.host.connect(full_addr(x.host))
            await _until(x.kad, lambda: a.host.peer_id in x.kad.table)
            await b.host.connect(full_addr(x.host))
            # B finds the bucket full: A is checked (its connection is up), stays.
            await _until(x.kad, lambda: bucket() == (1, 1, False))
            assert a.host.peer_id in x.kad.table

            gone = asyncio.Event()
            x.host.add_listener(HostListener(
                disconnected=lambda p: gone.set() if p == a.host.peer_id else None))
            await a.stop()
            extra.remove(a)
            await gone.wait()
            await c.host.connect(full_addr(x.host))
            # Now the check of A fails: A is evicted, a cached peer replaces it.
            await _until(x.kad, lambda: a.host.peer_id not in x.kad.table and not bucket()[2])
            members = {contact.peer_id for contact in x.kad.table.contacts()}
            assert len(members & {b.host.peer_id, c.host.peer_id}) == 1
        finally:
            for node in extra:
                await node.stop()


async def test_buckets_are_refreshed_when_the_routing_timer_fires() -> None:
    offset = [0.0]

    def clock() -> float:
        return time.monotonic() + offset[0]

    async with asyncio.timeout(TIMEOUT), kad_nodes(3) as (a, b, _c):
        await b.kad.bootstrap([full_addr(a.host)])
        node = await start_node(clock=clock)
        try:
            await node.kad.bootstrap([full_addr(a.host)])
            before = len(node.kad.stats.lookups)
            offset[0] = node.kad.config.routing.refresh_interval + 1.0
            node.kad.wake_timer()
            # Every bucket from the farthest to our nearest occupied one is
            # due: each gets a lookup, and its next refresh is a period away.
            occupied = [s.index for s in node.kad.table.occupancy() if s.size]
            due = 256 - min(occupied)
            await _until(node.kad, lambda: len(node.kad.stats.lookups) >= before + due)
            deadline = node.kad.table.next_deadline()
            assert deadline is not None and deadline > clock()
        finally:
            await node.stop()


async def test_a_client_connected_to_a_server_is_found_through_it() -> None:
    def configure(index: int, config: KadServiceConfig) -> KadServiceConfig:
        return replace(config, mode="client") if index == 1 else config

    async with asyncio.timeout(TIMEOUT), kad_nodes(3, configure=configure) as (server, client, finder):
        target = client.host.peer_id
        # The client first, so that its own lookup cannot meet the finder.
        await client.kad.bootstrap([full_addr(server.host)])
        await _identified(server, target)
        await finder.kad.bootstrap([full_addr(server.host)])
        assert target not in server.kad.table and target not in finder.kad.table
        assert target not in finder.host.peers() and finder.host.peerstore.addrs(target) == []

        addrs = await finder.kad.find_peer(target)
        assert client.host.listen_addrs()[0] in addrs
        conn = await finder.host.connect(f"{client.host.listen_addrs()[0]}/p2p/{target}")
        assert conn.remote_peer == target
