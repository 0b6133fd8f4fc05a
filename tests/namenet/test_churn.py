"""Naming under churn: one departed peer (shut down, or crashed without a
word) must not slow registration or resolution down to request timeouts,
nor turn "no such name" into a failure.  Ten nodes on loopback QUIC."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace

import pytest
from dnslib import RCODE, DNSRecord

from overlay.host.transport_types import Endpoint
from overlay.naming.dns_front import DnsFront, DnsFrontConfig
from overlay.naming.net_errors import NameNotFound
from overlay.naming.resolver import ResolverConfig
from tests.namenet.helpers import FAST_KAD, FAST_NAMES, name_network, start_name_node

# The production per-request timeouts (10 s): the test shows that a dead
# peer costs at most the resolver's deadline, whatever they are.
SLOW_KAD = replace(FAST_KAD, request_timeout=10.0,
                   lookup=replace(FAST_KAD.lookup, peer_timeout=10.0))
CHURN_NAMES = replace(FAST_NAMES, resolver=ResolverConfig(quorum=2))
BUDGET = 2.0
"""Seconds each operation may take with one dead peer (the resolver's
deadline is 1.5 s; loopback answers take milliseconds)."""


async def _black_hole(endpoints: list[Endpoint], port: int) -> socket.socket:
    """A socket on a crashed node's port that never reads: datagrams to it
    vanish without the ICMP "port unreachable" that would otherwise tell
    peers on loopback at once (a frozen process or a cut-off machine)."""
    for endpoint in endpoints:
        # After abort_for_test, aclose() only waits until the socket is gone.
        await endpoint.aclose()
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        hole.bind(("127.0.0.1", port))
    except BaseException:
        hole.close()
        raise
    return hole


@pytest.mark.parametrize("how", ["graceful", "crash", "frozen"])
async def test_a_departed_peer_costs_registration_and_not_found_under_two_seconds(
        how: str) -> None:
    async with asyncio.timeout(120), name_network(9, CHURN_NAMES, SLOW_KAD) as nodes:
        intro, b, c = nodes[0], nodes[1], nodes[2]
        await b.names.register("kept.ovl")
        x = await start_name_node(bootstrap=(intro.addr,), config=CHURN_NAMES,
                                  kad_config=SLOW_KAD)
        holes: list[socket.socket] = []
        try:
            # c knows x (it answered c's lookup), as the reporter's c did.
            await c.kad.find_closest(x.host.peer_id.to_bytes())
            assert x.host.peer_id in c.kad.table
            port = int(x.host.listen_addrs()[0].value_for_protocol("udp"))
            endpoints = x.host.endpoints()
            if how == "graceful":
                await x.stop()
            else:
                x.host.abort_for_test()
            if how == "frozen":
                holes.append(await _black_hole(endpoints, port))

            started = time.perf_counter()
            published = await c.names.register("fresh.ovl")
            took_register = time.perf_counter() - started
            assert published.stored >= 1

            started = time.perf_counter()
            with pytest.raises(NameNotFound) as missing:
                await c.names.resolve("missing.ovl", use_cache=False)
            took_missing = time.perf_counter() - started
            assert not missing.value.cached

            started = time.perf_counter()
            kept = await c.names.resolve("kept.ovl", use_cache=False, wait_final=True)
            took_kept = time.perf_counter() - started
            assert kept.record.owner == b.names.owner and kept.final

            assert took_register < BUDGET, f"registration took {took_register:.2f} s"
            assert took_missing < BUDGET, f"not found took {took_missing:.2f} s"
            assert took_kept < BUDGET, f"resolving took {took_kept:.2f} s"

            # The DNS front answers NXDOMAIN for a missing name, in time.
            async with DnsFront(DnsFrontConfig(port=0), c.names.resolve) as front:
                query = DNSRecord.question("nowhere.ovl", "A")
                started = time.perf_counter()
                raw = await asyncio.to_thread(query.send, *front.address, False, 5)
                took_dns = time.perf_counter() - started
            assert DNSRecord.parse(raw).header.rcode == RCODE.NXDOMAIN
            assert took_dns < BUDGET, f"DNS took {took_dns:.2f} s"

            # Another node sees the fresh name too.
            seen = await nodes[5].names.resolve("fresh.ovl", use_cache=False)
            assert seen.record.owner == c.names.owner
        finally:
            for hole in holes:
                hole.close()
            if how != "graceful":
                await x.stop()
