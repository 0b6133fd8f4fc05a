"""The asyncio lookup driver against in-process servers: in-flight limits,
silent peers that must not stall a lookup, late answers, the overall
deadline, and cancellation of what is still in flight."""

from __future__ import annotations

import asyncio
import time

from overlay.errors import DialError
from overlay.kad.keyspace import Contact
from overlay.kad.lookup import Lookup, LookupConfig, LookupKind
from overlay.kad.messages import KadMessage
from overlay.kad.net_lookup import drive_lookup

from tests.kad.helpers import Cluster, brute_closest

ORIGIN = 0


def _lookup(cluster: Cluster, target: Contact, config: LookupConfig) -> Lookup:
    origin = cluster.contacts[ORIGIN]
    seeds = cluster.servers[origin.peer_id].table.closest(target.key, config.k)
    return Lookup(LookupKind.FIND_NODE, target.peer_id.multihash, seeds, config,
                  local_key=origin.key)


class Network:
    """Answers from the cluster; ``silent`` peers never answer, ``broken``
    ones fail at once.  Records the most requests in flight at a time."""

    def __init__(
        self,
        cluster: Cluster,
        target: Contact,
        silent: frozenset[object] | set[object] = frozenset(),
        broken: frozenset[object] | set[object] = frozenset(),
    ) -> None:
        self.cluster = cluster
        self.target = target.peer_id.multihash
        self.silent = silent
        self.broken = broken
        self.in_flight = 0
        self.most_in_flight = 0
        self.cancelled = 0
        self.never = asyncio.Event()

    async def query(self, contact: Contact) -> KadMessage:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # answer on a later loop turn, like a network
            if contact.peer_id in self.broken:
                raise DialError("unreachable")
            if contact.peer_id in self.silent:
                await self.never.wait()
            answer = self.cluster.answer(LookupKind.FIND_NODE, self.target, contact.peer_id,
                                         self.cluster.contacts[ORIGIN].peer_id)
            assert answer is not None
            return answer
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1


def _answered(contact: Contact, answer: KadMessage) -> list[Contact]:
    return [info.contact() for info in answer.closer_peers]


async def test_lookup_finds_the_closest_with_alpha_in_flight() -> None:
    cluster = Cluster(120, seed=3)
    target = cluster.contacts[77]
    network = Network(cluster, target)
    failures: list[object] = []
    result = await drive_lookup(
        _lookup(cluster, target, LookupConfig(alpha=3)), network.query, _answered,
        lambda c, e: failures.append(e), time.monotonic, 10.0)
    others = [c for c in cluster.contacts if c is not cluster.contacts[ORIGIN]]
    assert list(result.closest) == brute_closest(others, target.key, 20)
    assert network.most_in_flight <= 3
    assert failures == [] and result.failed == 0


async def test_silent_peers_do_not_stall_and_are_cancelled_at_the_end() -> None:
    cluster = Cluster(60, seed=4)
    target = cluster.contacts[5]
    # The three closest seeds never answer: every alpha slot starts blocked.
    origin_table = cluster.servers[cluster.contacts[ORIGIN].peer_id].table
    silent = {c.peer_id for c in origin_table.closest(target.key, 3)}
    network = Network(cluster, target, silent=silent)
    started = time.monotonic()
    result = await drive_lookup(
        _lookup(cluster, target, LookupConfig(peer_timeout=0.05)), network.query, _answered,
        lambda c, e: None, time.monotonic, 10.0)
    assert time.monotonic() - started < 5.0
    assert result.answered >= 20 and result.failed == 3
    assert not silent & {c.peer_id for c in result.closest}
    # Each silent peer was asked twice (one retry after its timeout), and
    # both requests were still pending when it finished: cancelled.
    assert result.retries == 3
    assert network.cancelled == 6 and network.in_flight == 0


async def test_broken_peers_are_reported_and_skipped() -> None:
    cluster = Cluster(60, seed=5)
    target = cluster.contacts[9]
    broken = {c.peer_id for c in cluster.contacts[1:20]}
    network = Network(cluster, target, broken=broken)
    reported: list[object] = []
    result = await drive_lookup(
        _lookup(cluster, target, LookupConfig()), network.query, _answered,
        lambda c, e: reported.append(c.peer_id), time.monotonic, 10.0)
    assert reported and set(reported) <= broken
    assert len(reported) == result.failed
    assert result.answered + result.failed == result.messages
    assert result.closest and not broken & {c.peer_id for c in result.closest}


async def test_overall_deadline_returns_a_partial_result() -> None:
    cluster = Cluster(40, seed=6)
    target = cluster.contacts[3]
    everyone = {c.peer_id for c in cluster.contacts}
    network = Network(cluster, target, silent=everyone)
    result = await drive_lookup(
        _lookup(cluster, target, LookupConfig(peer_timeout=30.0)), network.query, _answered,
        lambda c, e: None, time.monotonic, 0.1)
    assert result.answered == 0 and result.messages == 3
    assert network.in_flight == 0 and network.cancelled == 3
