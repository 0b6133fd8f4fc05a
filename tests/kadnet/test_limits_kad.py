"""Kad under hostile load from one host: limits by source, admission by
observed address, and overload that is not taken for death."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import replace

from overlay.errors import OverlayError
from overlay.host import Host, NegotiatedStream
from overlay.identity import Ed25519PrivateKey
from overlay.kad.keyspace import Contact
from overlay.kad.messages import KadMessage, MessageType
from overlay.kad.net_server import InboundLimits
from overlay.kad.net_stream import read_kad_message, write_kad_message
from overlay.kad.routing import RoutingConfig
from overlay.kad.service import KadService
from overlay.kad.service_config import KadServiceConfig
from tests.kadnet.helpers import FAST_HOST, FAST_KAD, Node, full_addr, wait_until

TIMEOUT = 60


async def _node(stack: AsyncExitStack, ip: str, config: KadServiceConfig = FAST_KAD,
                limits: InboundLimits | None = None) -> Node:
    inner = AsyncExitStack()
    host = await inner.enter_async_context(Host(Ed25519PrivateKey.generate(), FAST_HOST))
    await host.listen([f"/ip4/{ip}/udp/0/quic-v1"])
    kad = await inner.enter_async_context(KadService(host, config, inbound_limits=limits))
    stack.push_async_callback(inner.aclose)
    return Node(host, kad, inner)


async def _hold_streams(attacker: Host, target: Node, count: int) -> list[NegotiatedStream]:
    """Open ``count`` kad streams to ``target`` and send nothing on them."""
    streams = []
    for _ in range(count):
        try:
            streams.append(await attacker.new_stream(target.host.peer_id, [target.kad.protocol]))
        except OverlayError:
            continue  # refused at once: fine, it is the attacker's loss
    return streams


async def _ask(client: Node, target: Node, rounds: int) -> int:
    contact = Contact.of(target.host.peer_id)
    ok = 0
    for _ in range(rounds):
        try:
            await client.kad.request(contact, KadMessage(MessageType.FIND_NODE, client.host.peer_id.multihash))
            ok += 1
        except (OverlayError, TimeoutError):
            pass
    return ok


async def test_one_peers_idle_streams_do_not_starve_others() -> None:
    async with asyncio.timeout(TIMEOUT), AsyncExitStack() as stack:
        target = await _node(stack, "127.0.0.1")
        legit = await _node(stack, "127.0.77.1")
        attacker = await stack.enter_async_context(Host(Ed25519PrivateKey.generate(), FAST_HOST))
        await attacker.listen(["/ip4/127.0.66.1/udp/0/quic-v1"])
        await legit.kad.bootstrap([full_addr(target.host)])
        assert target.host.peer_id in legit.kad.table

        await attacker.connect(full_addr(target.host))
        held = await _hold_streams(attacker, target, 64)
        assert held  # it did get some
        assert target.kad.inbound_streams <= InboundLimits().per_peer
        assert await _ask(legit, target, 20) == 20
        assert target.host.peer_id in legit.kad.table
        hits = target.kad.limit_hits.snapshot()
        assert hits.get("kad.streams_per_peer", 0) + hits.get("kad.streams_per_source", 0) > 0
        for stream in held:
            stream.reset()


async def test_a_refusal_for_overload_does_not_evict() -> None:
    # One stream per peer: the legitimate peer's own idle stream makes the
    # target refuse its next request; it stays in the table all the same.
    async with asyncio.timeout(TIMEOUT), AsyncExitStack() as stack:
        target = await _node(stack, "127.0.0.1", limits=InboundLimits(per_peer=1, evict_idle_after=3600))
        legit = await _node(stack, "127.0.77.1")
        await legit.kad.bootstrap([full_addr(target.host)])
        assert target.host.peer_id in legit.kad.table
        idle = await legit.host.new_stream(target.host.peer_id, [target.kad.protocol])
        await wait_until(lambda: target.kad.inbound_streams == 1, target.kad.activity, 10)
        assert await _ask(legit, target, 3) == 0
        assert target.host.peer_id in legit.kad.table
        assert legit.kad.policy.evictions == 0
        idle.reset()


async def test_a_restarted_peer_replaces_its_dead_selfs_idle_streams() -> None:
    # A daemon killed mid-work leaves idle kad streams on its peers until
    # they time out; the same identity, back on a new port, must be served
    # at once instead of being refused until then.
    key = Ed25519PrivateKey.generate()
    async with asyncio.timeout(TIMEOUT), AsyncExitStack() as stack:
        target = await _node(stack, "127.0.0.1", limits=InboundLimits(per_peer=2, evict_idle_after=0.0))
        old = await stack.enter_async_context(Host(key, FAST_HOST))
        await old.listen(["/ip4/127.0.55.1/udp/0/quic-v1"])
        await old.connect(full_addr(target.host))
        held = await _hold_streams(old, target, 2)
        for stream in held:  # answered, then left open: the dead self's streams
            await write_kad_message(stream, KadMessage(MessageType.FIND_NODE, old.peer_id.multihash))
            assert await read_kad_message(stream) is not None
        await wait_until(lambda: target.kad.inbound_streams == 2, target.kad.activity, 10)
        inner = AsyncExitStack()
        host = await inner.enter_async_context(Host(key, FAST_HOST))
        await host.listen(["/ip4/127.0.55.1/udp/0/quic-v1"])
        kad = await inner.enter_async_context(KadService(host, FAST_KAD))
        stack.push_async_callback(inner.aclose)
        await kad.bootstrap([full_addr(target.host)])
        assert target.host.peer_id in kad.table
        assert target.kad.limit_hits.snapshot().get("kad.idle_stream_replaced", 0) >= 1
        assert target.kad.inbound_streams <= 2
        for stream in held:
            stream.reset()


async def test_identities_from_one_address_fill_no_more_than_its_share() -> None:
    strict = replace(FAST_KAD, routing=RoutingConfig(exempt_local=False))
    async with asyncio.timeout(TIMEOUT), AsyncExitStack() as stack:
        target = await _node(stack, "127.0.0.1", strict)
        fakes = [await _node(stack, "127.0.88.1") for _ in range(8)]
        for i, fake in enumerate(fakes):
            # Each claims another address (loopback only) in identify.
            port = fake.host.listen_addrs()[0].value_for_protocol(0x0111)
            fake.host.add_advertised_addrs([f"/ip4/127.{i + 1}.{i + 2}.1/udp/{port}/quic-v1"])
            await fake.host.connect(full_addr(target.host))
        honest = [await _node(stack, f"127.0.{90 + i}.1") for i in range(3)]
        for node in honest:
            await node.kad.bootstrap([full_addr(target.host)])
        await wait_until(lambda: target.kad.checks_pending == 0, target.kad.activity, 20)
        members = {c.peer_id for c in target.kad.table.contacts()}
        from_fakes = members & {f.host.peer_id for f in fakes}
        assert len(from_fakes) <= strict.routing.max_per_group_per_table, len(from_fakes)
        assert {n.host.peer_id for n in honest} <= members
