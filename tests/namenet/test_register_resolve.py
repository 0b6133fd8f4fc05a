"""Register, resolve, update, transfer and release over real QUIC."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from overlay.naming.net_errors import NameNotFound, NameTaken, NotOwner
from overlay.naming.record import RecordKind, Service
from overlay.naming.service import Targets
from tests.namenet.helpers import name_network


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


async def test_register_then_resolve_from_every_node() -> None:
    async with asyncio.timeout(60), name_network(5) as nodes:
        owner = nodes[2]
        result = await owner.names.register("alice.ovl", Targets(
            self_peer=True, ips=(_ip("10.0.0.7"),), services=(Service("http", 8080),),
            txt=("hello",)))
        assert result.stored >= 2
        for node in nodes:
            if node is owner:
                continue
            got = await node.names.resolve("Alice.OVL.")
            assert got.source == "network"
            assert got.name == "alice.ovl"
            record = got.record
            assert record.owner == owner.key.public_key().to_protobuf()
            assert record.peers[0].peer_id == owner.host.peer_id.to_bytes()
            assert set(record.peers[0].addrs) == {a.to_bytes() for a in owner.host.listen_addrs()}
            assert record.txt == ("hello",)
            again = await node.names.resolve("alice.ovl")
            assert again.source == "cache" and again.record == record


async def test_unknown_name_is_not_found_and_negatively_cached() -> None:
    async with asyncio.timeout(60), name_network(3) as nodes:
        with pytest.raises(NameNotFound) as first:
            await nodes[1].names.resolve("nobody.ovl")
        assert not first.value.cached
        with pytest.raises(NameNotFound) as second:
            await nodes[1].names.resolve("nobody.ovl")
        assert second.value.cached


async def test_update_transfer_release() -> None:
    async with asyncio.timeout(90), name_network(5) as nodes:
        alice, bob, reader = nodes[1], nodes[2], nodes[3]
        first = await alice.names.register("shop.ovl", Targets(txt=("v1",)))
        updated = await alice.names.update("shop.ovl", Targets(txt=("v2",)))
        assert updated.record.sequence > first.record.sequence
        got = await reader.names.resolve("shop.ovl", use_cache=False, wait_final=True)
        assert got.record.txt == ("v2",) and got.record.sequence == updated.record.sequence

        with pytest.raises(NameTaken):
            await bob.names.register("shop.ovl", Targets(txt=("mine",)))
        with pytest.raises(NotOwner):
            await bob.names.update("shop.ovl", Targets(txt=("mine",)))

        handed = await alice.names.transfer("shop.ovl", bob.host.peer_id)
        assert handed.record.kind is RecordKind.TRANSFER
        assert [o.record.name for o in alice.names.owned()] == []
        taken = await bob.names.register("shop.ovl", Targets(txt=("bob",)))
        assert taken.record.transfer_proof == handed.record.to_bytes()
        got = await reader.names.resolve("shop.ovl", use_cache=False, wait_final=True)
        assert got.record.owner == bob.key.public_key().to_protobuf()
        assert got.record.txt == ("bob",)

        await bob.names.release("shop.ovl")
        with pytest.raises(NameNotFound) as released:
            await reader.names.resolve("shop.ovl", use_cache=False, wait_final=True)
        assert released.value.released
        # A released name is free again, for anyone.
        again = await alice.names.register("shop.ovl", Targets(txt=("back",)))
        assert again.record.owner == alice.key.public_key().to_protobuf()
