"""A release lets the next owner in, also at a resolver that pinned the
old owner and never saw the release (docs/naming.md, "Release")."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from dnslib import RCODE, DNSRecord

from overlay.naming.dns_front import DnsFront, DnsFrontConfig
from overlay.naming.net_errors import NameNotFound
from overlay.naming.policy import released_by
from overlay.naming.service import Targets
from tests.namenet.helpers import name_network


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


async def _a_records(address: tuple[str, int], name: str) -> list[str]:
    query = DNSRecord.question(name, "A")
    raw = await asyncio.to_thread(query.send, address[0], address[1], False, 5)
    answer = DNSRecord.parse(raw)
    assert answer.header.rcode == RCODE.NOERROR
    return [str(rr.rdata) for rr in answer.rr]


async def test_after_a_release_a_resolver_pinned_on_the_old_owner_serves_the_new_one() -> None:
    async with asyncio.timeout(60), name_network(4) as nodes:
        a, b, c = nodes[0], nodes[1], nodes[2]
        async with DnsFront(DnsFrontConfig(port=0), c.names.resolve) as front:
            await b.names.register("rel.ovl", Targets(ips=(_ip("192.0.2.1"),)))
            first = await c.names.resolve("rel.ovl")
            assert first.record.owner == b.names.owner
            assert await _a_records(front.address, "rel.ovl") == ["192.0.2.1"]
            pin = c.names.state.pins.get("rel.ovl")
            assert pin is not None and pin.owner == b.names.owner

            release = await b.names.release("rel.ovl")
            taken = await a.names.register("rel.ovl", Targets(ips=(_ip("192.0.2.2"),)))
            proof = released_by(taken.record)
            assert proof is not None and proof.to_bytes() == release.record.to_bytes()

            # c never saw the release: the storage nodes now hold a's record.
            again = await c.names.resolve("rel.ovl", use_cache=False)
            assert again.record.owner == a.names.owner
            assert [bytes(ip) for ip in again.record.ips] == [_ip("192.0.2.2")]
            pin = c.names.state.pins.get("rel.ovl")
            assert pin is not None and pin.owner == a.names.owner
            assert await _a_records(front.address, "rel.ovl") == ["192.0.2.2"]

            # a's updates keep carrying the proof for resolvers still pinned on b.
            updated = await a.names.update("rel.ovl", Targets(txt=("hello",)))
            assert updated.record.release_proof == taken.record.release_proof
            # b cannot take the name back.
            d = nodes[3]
            seen = await d.names.resolve("rel.ovl", use_cache=False, wait_final=True)
            assert seen.record.owner == a.names.owner


async def test_the_old_owner_registering_again_does_not_need_a_proof() -> None:
    async with asyncio.timeout(60), name_network(3) as nodes:
        b, c = nodes[1], nodes[2]
        await b.names.register("back.ovl")
        await c.names.resolve("back.ovl")
        await b.names.release("back.ovl")
        with pytest.raises(NameNotFound) as gone:
            await c.names.resolve("back.ovl", use_cache=False)
        assert gone.value.released and gone.value.release is not None
        again = await b.names.register("back.ovl")
        assert again.record.release_proof == b"" and again.pow_seconds == 0.0
        got = await c.names.resolve("back.ovl", use_cache=False)
        assert got.record.owner == b.names.owner
