"""Storage nodes pin owners; forged and squatting responders do not win."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import replace

from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.kad.records import Record
from overlay.kad.store import MemoryRecordStore, StoredRecord
from overlay.naming import make_record, solve_pow
from overlay.naming.dht_namespace import NameNamespace
from overlay.naming.kad_client import KadNameClient
from overlay.naming.record import PeerTarget
from overlay.naming.service import Targets
from tests.namenet.helpers import NAMING, POW_BITS, start_name_node, name_network

KEY = NameNamespace(NAMING).key_for("alice.ovl")


def _squatter_record(key: Ed25519PrivateKey, now: float) -> bytes:
    owner = key.public_key().to_protobuf()
    nonce = solve_pow("alice.ovl", owner, POW_BITS, random.Random(7))
    peer = PeerId.from_public_key(key.public_key())
    return make_record(key, "alice.ovl", sequence=10**19, expires=int(now + 3600), ttl=60,
                       peers=(PeerTarget(peer.to_bytes()),), pow_nonce=nonce).to_bytes()


async def test_storage_nodes_refuse_another_owner() -> None:
    async with asyncio.timeout(60), name_network(5) as nodes:
        alice = nodes[1]
        await alice.names.register("alice.ovl", Targets(txt=("real",)))
        mallory = await start_name_node(bootstrap=(nodes[0].addr,))
        try:
            forged = _squatter_record(Ed25519PrivateKey.generate(), time.time())
            accepted = await KadNameClient(mallory.kad).put_value(KEY, forged, timeout=5.0)
            assert accepted == 0
            holders = 0
            for node in nodes:
                held = node.kad.records.get(KEY, time.time())
                if held is not None:
                    holders += 1
                    assert held.record.value != forged
            assert holders >= 3
            got = await mallory.names.resolve("alice.ovl")
            assert got.record.owner == alice.key.public_key().to_protobuf()
        finally:
            await mallory.stop()


class LyingStore(MemoryRecordStore):
    """Serves a fixed value for one key, whatever it was told to store."""

    def __init__(self, base: MemoryRecordStore, key: bytes, value: bytes) -> None:
        super().__init__(base.config, base.registry)
        self.key = key
        self.value = value

    def get(self, key: bytes, now: float) -> StoredRecord | None:
        if key == self.key:
            return StoredRecord(Record(key, self.value), None, now, now + 3600)
        return super().get(key, now)

    def put(self, record: Record, publisher: PeerId | None, now: float,
            source: str | None = None) -> StoredRecord:
        if record.key == self.key:
            return StoredRecord(record, publisher, now, now + 3600)  # says yes, keeps lying
        return super().put(record, publisher, now, source)

    def __iter__(self) -> Iterator[StoredRecord]:
        return iter([])


async def test_forged_and_squatting_responders_do_not_win() -> None:
    async with asyncio.timeout(90), name_network(6) as nodes:
        alice = nodes[1]
        published = await alice.names.register("alice.ovl", Targets(txt=("real",)))
        real = published.record
        # One liar serves a tampered copy (bad signature), one a validly
        # signed registration of the same name by another key.
        tampered = replace(real, txt=("evil",)).to_bytes()
        squat = _squatter_record(Ed25519PrivateKey.generate(), time.time())
        liars = []
        for value in (tampered, squat):
            node = await start_name_node(bootstrap=(nodes[0].addr,))
            liars.append(node)
            node.kad.records = LyingStore(node.kad.records, KEY, value)  # type: ignore[arg-type]
        try:
            reader = await start_name_node(bootstrap=(nodes[0].addr,))
            liars.append(reader)
            for liar in liars[:2]:
                await reader.host.connect(liar.addr)
            got = await reader.names.resolve("alice.ovl")
            assert got.record.owner == real.owner
            assert got.record.txt == ("real",)
            await reader.names.resolver.wait_idle()
            # Both liars answered something else, and were sent the real record.
            assert reader.names.resolver.corrections_sent >= 2
            final = await reader.names.resolve("alice.ovl")
            assert final.source == "cache" and final.record.owner == real.owner
        finally:
            for node in reversed(liars):
                await node.stop()
