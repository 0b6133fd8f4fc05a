"""A node whose bootstrap peer could not serve it at start tries again
within seconds, backing off, instead of waiting out the maintenance period."""

from __future__ import annotations

import asyncio
import random
from contextlib import AsyncExitStack
from dataclasses import replace

from overlay.host import Host
from overlay.identity import Ed25519PrivateKey
from overlay.kad.bootstrap_report import bootstrap_retry_delay
from overlay.kad.service import KadService
from tests.kadnet.helpers import FAST_HOST, FAST_KAD, LOOPBACK, full_addr, start_node, wait_until


def test_retry_delays_double_up_to_the_ceiling_with_spread() -> None:
    rng = random.Random(7)
    for failures, base in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0)):
        delay = bootstrap_retry_delay(failures, 60.0, rng)
        assert base / 2 <= delay <= base, (failures, delay)


async def test_an_alone_node_retries_its_bootstrap_peer_within_seconds() -> None:
    key = Ed25519PrivateKey.generate()
    async with asyncio.timeout(30), AsyncExitStack() as stack:
        # The bootstrap peer is down when the node starts ...
        async with Host(key, FAST_HOST) as first:
            await first.listen([LOOPBACK])
            address = full_addr(first)
        node = await start_node(replace(FAST_KAD, bootstrap=(address,)))
        stack.push_async_callback(node.stop)
        await wait_until(lambda: node.kad.last_bootstrap is not None, node.kad.activity, 10)
        assert len(node.kad.table) == 0
        # ... and comes back on the same address, knowing nobody.
        peer = await stack.enter_async_context(Host(key, FAST_HOST))
        await peer.listen([address.rsplit("/p2p/", 1)[0]])
        await stack.enter_async_context(KadService(peer, FAST_KAD))
        # max_timer_delay is 60 s: only the backed-off retry gets here in time.
        await wait_until(lambda: peer.peer_id in node.kad.table, node.kad.activity, 8)
