"""A few kad services over real QUIC: bootstrap, lookups, values, providers."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from overlay.kad.records import immutable_key
from overlay.kad.service_errors import NoPeersKnown, ValueNotFound

from tests.kadnet.helpers import FAST_KAD, full_addr, kad_nodes


async def test_bootstrap_find_put_get_provide() -> None:
    async with asyncio.timeout(30), kad_nodes(5) as nodes:
        first = full_addr(nodes[0].host)
        for node in nodes[1:]:
            await node.kad.bootstrap([first])
        for node in nodes:
            assert len(node.kad.table) >= 1
        a, e = nodes[1], nodes[4]
        addrs = await a.kad.lookup_peer(e.host.peer_id)
        assert e.host.listen_addrs()[0] in addrs

        key = await a.kad.put_immutable(b"hello kad")
        assert key == immutable_key(b"hello kad")
        for node in nodes:
            record = await node.kad.get_value(key)
            assert record.value == b"hello kad"

        provider_key = b"\x12\x20" + bytes(range(32))
        told = await nodes[2].kad.provide(provider_key)
        assert told >= 1
        found = await nodes[3].kad.find_providers(provider_key)
        assert nodes[2].host.peer_id in {info.peer_id for info in found}


async def test_missing_value_is_a_typed_error() -> None:
    async with asyncio.timeout(30), kad_nodes(3) as nodes:
        for node in nodes[1:]:
            await node.kad.bootstrap([full_addr(nodes[0].host)])
        with pytest.raises(ValueNotFound):
            await nodes[2].kad.get_value(immutable_key(b"never stored"))


async def test_lonely_node_knows_no_peers() -> None:
    async with asyncio.timeout(10), kad_nodes(1) as nodes:
        with pytest.raises(NoPeersKnown):
            await nodes[0].kad.find_closest(b"anything")


async def test_disjoint_path_lookups_over_the_network() -> None:
    from overlay.kad.lookup import LookupConfig

    config = replace(FAST_KAD, lookup=LookupConfig(peer_timeout=2.0, disjoint_paths=3))
    async with asyncio.timeout(30), kad_nodes(6, config) as nodes:
        for node in nodes[1:]:
            await node.kad.bootstrap([full_addr(nodes[0].host)])
        key = await nodes[2].kad.put_immutable(b"three paths")
        assert (await nodes[5].kad.get_value(key)).value == b"three paths"
        addrs = await nodes[4].kad.lookup_peer(nodes[1].host.peer_id)
        assert nodes[1].host.listen_addrs()[0] in addrs
