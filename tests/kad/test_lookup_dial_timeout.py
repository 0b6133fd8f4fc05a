"""The asyncio lookup driver retries a timeout on an open connection (a
message may be lost) but not one that left no connection (the dial went
unanswered: the peer is gone)."""

from __future__ import annotations

import asyncio
import time

from overlay.identity import PeerId
from overlay.kad.keyspace import Contact
from overlay.kad.lookup import Lookup, LookupConfig, LookupKind, LookupResult
from overlay.kad.messages import KadMessage
from overlay.kad.net_lookup import drive_lookup
from tests.kad.helpers import Cluster


async def _run(connected: bool) -> tuple[LookupResult, dict[PeerId, int]]:
    cluster = Cluster(60, seed=6)
    origin, target = cluster.contacts[0], cluster.contacts[30]
    seeds = cluster.servers[origin.peer_id].table.closest(target.key, 20)
    gone = {c.peer_id for c in seeds[:2]}
    asked: dict[PeerId, int] = {}

    async def query(contact: Contact) -> KadMessage:
        asked[contact.peer_id] = asked.get(contact.peer_id, 0) + 1
        await asyncio.sleep(0)
        if contact.peer_id in gone:
            raise TimeoutError("no answer in time")
        answer = cluster.answer(LookupKind.FIND_NODE, target.peer_id.multihash, contact.peer_id,
                                origin.peer_id)
        assert answer is not None
        return answer

    # The request's own timeout is what fails: the lookup's is far away.
    lookup = Lookup(LookupKind.FIND_NODE, target.peer_id.multihash, seeds,
                    LookupConfig(peer_timeout=30.0, retries=1), local_key=origin.key)
    result = await drive_lookup(
        lookup, query, lambda c, a: [i.contact() for i in a.closer_peers], lambda c, e: None,
        time.monotonic, 10.0, connected=lambda peer: connected)
    return result, {p: n for p, n in asked.items() if p in gone}


async def test_a_timeout_without_a_connection_is_final() -> None:
    result, asked = await _run(connected=False)
    assert list(asked.values()) == [1, 1]
    assert result.retries == 0 and result.failed == 2


async def test_a_timeout_on_an_open_connection_is_retried_once() -> None:
    result, asked = await _run(connected=True)
    assert list(asked.values()) == [2, 2]
    assert result.retries == 2 and result.failed == 2
