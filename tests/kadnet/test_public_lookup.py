"""``KadService.lookup``, the public lookup with answer and failure hooks
(what naming runs its resolutions on): six kad nodes on loopback QUIC."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest

from overlay.identity import PeerId
from overlay.kad.errors import InvalidRecord
from overlay.kad.keyspace import Contact
from overlay.kad.lookup import LookupKind
from overlay.kad.messages import KadMessage
from overlay.kad.records import Record, immutable_key
from overlay.kad.service_errors import NoPeersKnown
from tests.kadnet.helpers import FAST_HOST, FAST_TRANSPORT, Node, full_addr, kad_nodes

NODES = 6


@dataclass
class Seen:
    """Every hook call of one lookup, in order."""

    events: list[tuple[str, PeerId]] = field(default_factory=list)
    values: dict[PeerId, bytes | None] = field(default_factory=dict)
    errors: dict[PeerId, BaseException] = field(default_factory=dict)
    seeds: list[PeerId] | None = None

    def peers(self, contacts: Sequence[Contact]) -> None:
        if self.seeds is None:
            self.seeds = [c.peer_id for c in contacts]
        self.events.extend(("named", c.peer_id) for c in contacts)

    def answer(self, contact: Contact, message: KadMessage) -> None:
        self.events.append(("answered", contact.peer_id))
        self.values[contact.peer_id] = message.record.value if message.record else None

    def failure(self, contact: Contact, exc: BaseException) -> None:
        self.events.append(("failed", contact.peer_id))
        self.errors[contact.peer_id] = exc

    def named_before(self, peer: PeerId, what: str) -> bool:
        kinds = [kind for kind, p in self.events if p == peer]
        return what in kinds and "named" in kinds[: kinds.index(what)]


async def _meshed(nodes: list[Node]) -> None:
    boot = full_addr(nodes[0].host)
    async with asyncio.TaskGroup() as tg:
        for node in nodes[1:]:
            tg.create_task(node.kad.bootstrap([boot]))
    for node in nodes:
        await node.kad.find_closest(os.urandom(34))


async def test_hooks_report_seeds_answers_and_records_of_a_lookup_run_to_the_end() -> None:
    async with asyncio.timeout(60), kad_nodes(NODES) as nodes:
        await _meshed(nodes)
        value = os.urandom(40)
        key = await nodes[1].kad.put_immutable(value)
        asker = nodes[4]
        holders = {p for p in (n.host.peer_id for n in nodes) if p != asker.host.peer_id
                   and next(n for n in nodes if n.host.peer_id == p).kad.local_record(key)}
        assert holders, "the PUT reached nobody"

        seen = Seen()
        result = await asker.kad.lookup(LookupKind.GET_VALUE, key, quorum=0,
                                        on_peers=seen.peers, on_answer=seen.answer,
                                        on_failure=seen.failure)

        # The seeds come first, before any answer; every peer is named
        # before it answers, and each answer is reported once.
        assert seen.events[0][0] == "named" and seen.seeds
        answered = [p for kind, p in seen.events if kind == "answered"]
        assert len(answered) == len(set(answered)) == result.answered == NODES - 1
        assert all(seen.named_before(p, "answered") for p in answered)
        assert not seen.errors and result.failed == 0
        # Records as each peer served them: exactly the holders had it.
        assert {p for p, v in seen.values.items() if v is not None} == holders
        assert all(v == value for v in seen.values.values() if v is not None)
        # Run to the end: a definite answer about the whole window.
        assert result.complete and result.closest_answered == NODES - 1
        assert result.record is not None and result.record.value == value
        assert result.valid_records == len(holders)


async def test_a_quorum_ends_the_lookup_at_the_first_valid_records() -> None:
    async with asyncio.timeout(60), kad_nodes(NODES) as nodes:
        await _meshed(nodes)
        value = os.urandom(40)
        key = await nodes[2].kad.put_immutable(value)
        seen = Seen()
        result = await nodes[5].kad.lookup(LookupKind.GET_VALUE, key, quorum=1,
                                           on_answer=seen.answer)
        assert result.quorum_reached and result.record is not None
        assert result.record.value == value
        assert any(v == value for v in seen.values.values())
        assert len(seen.values) == result.answered


async def test_a_crashed_peer_is_reported_through_the_failure_hook() -> None:
    async with asyncio.timeout(60), kad_nodes(NODES) as nodes:
        await _meshed(nodes)
        crashed, asker = nodes[3], nodes[1]
        dead = crashed.host.peer_id
        assert dead in asker.kad.table
        crashed.host.abort_for_test()  # loopback ICMP tells the asker at once

        seen = Seen()
        result = await asker.kad.lookup(LookupKind.FIND_NODE, dead.multihash,
                                        on_peers=seen.peers, on_answer=seen.answer,
                                        on_failure=seen.failure)
        assert seen.seeds is not None and dead in seen.seeds
        assert dead in seen.errors and dead not in seen.values
        assert seen.named_before(dead, "failed")
        assert result.failed == len(seen.errors) and result.closest_failed >= 1
        assert dead not in {c.peer_id for c in result.closest}
        await crashed.stop()
        nodes.remove(crashed)


async def test_a_silent_peer_is_in_no_hook_when_the_timeout_ends_the_lookup() -> None:
    # Without ICMP errors a crashed peer is only silence; its request
    # timeout (at least min_request_timeout) outlasts the lookup's.
    host_config = replace(FAST_HOST, transport=replace(FAST_TRANSPORT, icmp_errors=False))
    async with asyncio.timeout(60), kad_nodes(NODES, host_config=host_config) as nodes:
        await _meshed(nodes)
        frozen, asker = nodes[2], nodes[0]
        silent = frozen.host.peer_id
        assert silent in asker.kad.table
        frozen.host.abort_for_test()
        limit = asker.kad.config.min_request_timeout / 2

        seen = Seen()
        started = time.monotonic()
        result = await asker.kad.lookup(LookupKind.FIND_NODE, silent.multihash, timeout=limit,
                                        on_peers=seen.peers, on_answer=seen.answer,
                                        on_failure=seen.failure)
        took = time.monotonic() - started
        assert result.deadline_reached and not result.complete
        assert result.closest_silent >= 1
        assert silent in result.queried
        assert silent not in seen.values and silent not in seen.errors
        assert took < asker.kad.config.min_request_timeout
        await frozen.stop()
        nodes.remove(frozen)


async def test_a_lookup_without_peers_raises_and_calls_no_hook() -> None:
    async with asyncio.timeout(30), kad_nodes(1) as (alone,):
        seen = Seen()
        with pytest.raises(NoPeersKnown):
            await alone.kad.lookup(LookupKind.GET_VALUE, b"/v/" + os.urandom(32).hex().encode(),
                                   on_peers=seen.peers, on_answer=seen.answer,
                                   on_failure=seen.failure)
        assert not seen.events


async def test_store_at_puts_to_one_peer_and_store_local_only_here() -> None:
    async with asyncio.timeout(30), kad_nodes(2) as (a, b):
        await a.host.connect(full_addr(b.host))
        here, there = os.urandom(24), os.urandom(24)
        here_key, there_key = immutable_key(here), immutable_key(there)
        a.kad.store_local(Record(here_key, here))
        assert (stored := a.kad.local_record(here_key)) is not None and stored.value == here
        assert b.kad.local_record(here_key) is None

        await a.kad.store_at(b.host.peer_id, Record(there_key, there))
        assert (got := b.kad.local_record(there_key)) is not None and got.value == there
        assert a.kad.local_record(there_key) is None
        with pytest.raises(InvalidRecord):  # the store's validator still decides
            a.kad.store_local(Record(there_key, here))
