"""Thirty nodes on loopback over real QUIC, in one process (issue 3, part 8).

Every node bootstraps through the first one; then every node finds every
other by peer ID, a value put by one node is read by all, and after a third
of the nodes are stopped the value is still read by every survivor.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import pytest

from overlay.kad.lookup import LookupKind

from tests.kadnet.helpers import Node, full_addr, kad_nodes

pytestmark = pytest.mark.slow

NODES = 30


def _lookup_figures(nodes: list[Node], kind: LookupKind, since: int) -> tuple[float, float, float]:
    """(median ms, p95 ms, median messages) of ``kind`` lookups recorded
    after index ``since`` of each node's stats."""
    seconds: list[float] = []
    messages: list[int] = []
    for node in nodes:
        for stats in list(node.kad.stats.lookups)[since:]:
            if stats.kind is kind:
                seconds.append(stats.seconds)
                messages.append(stats.messages)
    assert seconds, "no lookups were recorded"
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return statistics.median(seconds) * 1000, p95 * 1000, statistics.median(messages)


async def test_thirty_nodes_find_each_other_and_survive_losing_a_third() -> None:
    async with asyncio.timeout(120), kad_nodes(NODES) as nodes:
        started = time.monotonic()
        boot = full_addr(nodes[0].host)
        async with asyncio.TaskGroup() as tg:
            for node in nodes[1:]:
                tg.create_task(node.kad.bootstrap([boot]))
        bootstrap_s = time.monotonic() - started
        # Peers that reached a node by themselves enter its table once
        # they answered the one request that admits them.
        for node in nodes:
            while node.kad.checks_pending:
                node.kad.activity.clear()
                await node.kad.activity.wait()
        for node in nodes:
            assert len(node.kad.table) >= 10, (node.host.peer_id, len(node.kad.table))

        # Every node finds every other one through a real lookup.
        marks = [len(node.kad.stats.lookups) for node in nodes]

        async def find_all(me: Node) -> None:
            for other in nodes:
                if other is me:
                    continue
                addrs = await me.kad.lookup_peer(other.host.peer_id)
                assert other.host.listen_addrs()[0] in addrs, (me.host.peer_id, other.host.peer_id)

        started = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for node in nodes:
                tg.create_task(find_all(node))
        find_s = time.monotonic() - started
        find_figures = _lookup_figures(nodes, LookupKind.FIND_NODE, min(marks))
        # One node alone, one lookup at a time: the latency without contention.
        solo: list[float] = []
        for other in nodes[1:]:
            began = time.monotonic()
            assert other.host.listen_addrs()[0] in await nodes[0].kad.lookup_peer(other.host.peer_id)
            solo.append(time.monotonic() - began)
        # Full lookups (until the 20 closest answered) of random keys.
        full = [await nodes[0].kad.find_closest(os.urandom(34)) for _ in range(10)]
        assert all(len(result.closest) == 20 for result in full)
        full_stats = list(nodes[0].kad.stats.lookups)[-10:]

        # A value put by one node is read by every other.
        putter = nodes[7]
        value = b"thirty nodes agree on this"
        key = await putter.kad.put_immutable(value)
        holders = sum(1 for node in nodes if node.kad.records.get(key, time.time()) is not None)
        assert holders >= 10
        marks = [len(node.kad.stats.lookups) for node in nodes]
        for node in nodes:
            record = await node.kad.get_value(key)
            assert record.value == value

        # Stop a third, holders among them, then read from every survivor.
        stopped = nodes[NODES - NODES // 3 :]
        assert any(n.kad.records.get(key, time.time()) is not None for n in stopped)
        for node in stopped:
            await node.stop()
        survivors = nodes[: NODES - NODES // 3]
        started = time.monotonic()

        async def read(node: Node) -> None:
            record = await node.kad.get_value(key)
            assert record.value == value

        async with asyncio.TaskGroup() as tg:
            for node in survivors:
                tg.create_task(read(node))
        read_after_s = time.monotonic() - started
        get_figures = _lookup_figures(survivors, LookupKind.GET_VALUE, 0)
        del nodes[NODES - NODES // 3 :]  # already stopped

        print(
            f"\n{NODES} nodes: bootstrap {bootstrap_s:.1f}s, {NODES * (NODES - 1)} find-peer "
            f"lookups in {find_s:.1f}s (median {find_figures[0]:.1f} ms, p95 "
            f"{find_figures[1]:.1f} ms, median {find_figures[2]} messages; one at a time: "
            f"median {statistics.median(solo) * 1000:.1f} ms); full 20-closest lookups: median "
            f"{statistics.median(x.seconds for x in full_stats) * 1000:.1f} ms, "
            f"{statistics.median(x.messages for x in full_stats)} messages, "
            f"{statistics.median(x.rounds for x in full_stats)} rounds; "
            f"value on {holders} nodes; reads after stopping {NODES // 3}: {read_after_s:.1f}s "
            f"(GET median {get_figures[0]:.1f} ms, p95 {get_figures[1]:.1f} ms)"
        )
