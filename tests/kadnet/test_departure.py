"""Peers that leave: ten kad nodes on loopback QUIC; one shuts down
cleanly, one crashes (its sockets vanish without a CONNECTION_CLOSE).

- After a clean shutdown every node that had the departed peer in its
  table drops it promptly (it announced GOING_AWAY; no timeout involved).
- After a crash a lookup still finishes in well under two seconds (the
  silent peer's request times out after a measured-RTT timeout, not ten
  seconds) and the nodes that tried the dead peer evict it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from overlay.host import HostListener
from overlay.kad.service_errors import ValueNotFound
from tests.kadnet.helpers import FAST_HOST, FAST_TRANSPORT, Node, full_addr, kad_nodes

pytestmark = pytest.mark.slow

NODES = 10


async def _until(nodes: Sequence[Node], predicate: Callable[[], bool], timeout: float) -> None:
    """Wait for ``predicate``, re-checking whenever any node's kad service
    reports activity."""
    async with asyncio.timeout(timeout):
        while not predicate():
            for node in nodes:
                node.kad.activity.clear()
            waiters = [asyncio.ensure_future(node.kad.activity.wait()) for node in nodes]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()


async def _bootstrapped(nodes: list[Node]) -> None:
    boot = full_addr(nodes[0].host)
    async with asyncio.TaskGroup() as tg:
        for node in nodes[1:]:
            tg.create_task(node.kad.bootstrap([boot]))
    # Everyone talks to everyone once, so every table is full of live entries
    # with connections and RTT samples.
    for node in nodes:
        await node.kad.find_closest(os.urandom(34))


async def test_a_clean_shutdown_leaves_every_table_at_once() -> None:
    async with asyncio.timeout(90), kad_nodes(NODES) as nodes:
        await _bootstrapped(nodes)
        leaving = nodes[5]
        gone = leaving.host.peer_id
        holders = [n for n in nodes if n is not leaving and gone in n.kad.table]
        assert len(holders) >= NODES // 2, "the departing node should be widely known"
        others = [n for n in nodes if n is not leaving]

        started = time.monotonic()
        await leaving.stop()
        stopped = time.monotonic()
        await _until(others, lambda: not any(gone in n.kad.table for n in others), timeout=5.0)
        dropped = time.monotonic()
        nodes.remove(leaving)
        print(
            f"\nclean shutdown: stop took {stopped - started:.3f} s; "
            f"{len(holders)} tables dropped it {dropped - stopped:.3f} s later"
        )
        # No check request was needed: the GOING_AWAY close said it all.
        assert dropped - stopped < 2.0
        for node in others:
            assert node.kad.table.recently_failed(gone, node.kad._clock())
            assert all(c.peer_id != gone for c in node.kad.table.closest(int.from_bytes(os.urandom(32)), 20))


@pytest.mark.parametrize("icmp", [True, False], ids=["icmp", "silence-only"])
async def test_a_crashed_peer_costs_a_lookup_less_than_two_seconds(icmp: bool) -> None:
    # With ICMP errors (loopback, LAN) the crash shows at the first packet;
    # without (a firewall eats them) the measured-RTT timeout decides.
    transport = replace(FAST_TRANSPORT, icmp_errors=icmp)
    host_config = replace(FAST_HOST, transport=transport)
    async with asyncio.timeout(90), kad_nodes(NODES, host_config=host_config) as nodes:
        await _bootstrapped(nodes)
        crashed = nodes[7]
        dead = crashed.host.peer_id
        asker = next(n for n in nodes if n is not crashed and dead in n.kad.table)
        assert dead in asker.host.peers()  # a stale connection: only silence or ICMP tells
        crashed.host.abort_for_test()

        # The lookup goes straight at the dead peer: it is the closest to its own ID.
        started = time.monotonic()
        result = await asker.kad.find_closest(dead.multihash)
        find_s = time.monotonic() - started
        assert dead in result.queried and dead not in {c.peer_id for c in result.closest}
        assert result.closest_failed >= 1 and result.complete

        started = time.monotonic()
        with pytest.raises(ValueNotFound):
            await asker.kad.get_value(b"/v/" + os.urandom(32).hex().encode())
        get_s = time.monotonic() - started

        # The node that tried it evicts it (a ping on the stale connection fails).
        await _until([asker], lambda: dead not in asker.kad.table, timeout=5.0)
        evicted_s = time.monotonic() - started
        print(
            f"\ncrash ({'icmp' if icmp else 'silence only'}): FIND_NODE {find_s:.3f} s, GET_VALUE (not found) {get_s:.3f} s, "
            f"evicted by the asker {evicted_s:.3f} s after the GET began; "
            f"request timeout for it was {asker.kad.rtt.timeout(dead, connected=True):.3f} s"
        )
        assert find_s < 2.0 and get_s < 2.0
        assert asker.kad.table.recently_failed(dead, asker.kad._clock())
        # Hearsay does not bring it back: a node that still lists it does
        # not make the asker query it again.
        again = await asker.kad.find_closest(dead.multihash)
        assert dead not in again.queried
        await crashed.stop()
        nodes.remove(crashed)


async def test_a_new_connection_gives_a_first_rtt_estimate() -> None:
    async with asyncio.timeout(30), kad_nodes(2) as (a, b):
        assert a.kad.rtt.peer(b.host.peer_id) is None
        connected = asyncio.Event()
        # Listeners run in order: ours fires after the kad service's.
        a.host.add_listener(HostListener(connected=lambda peer, conn: connected.set()))
        await a.host.connect(full_addr(b.host))
        await connected.wait()
        estimate = a.kad.rtt.peer(b.host.peer_id)
        assert estimate is not None and estimate.samples == 1 and 0 < estimate.srtt < 1.0
        # Loopback: the derived timeout sits at the floor, not at request_timeout.
        assert a.kad.rtt.timeout(b.host.peer_id, connected=True) == a.kad.config.min_request_timeout
