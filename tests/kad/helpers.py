"""Shared builders for the pure kad tests: deterministic peers, addresses
and a synchronous in-process network answering lookups at a fixed ``now``."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from overlay.identity import PeerId
from overlay.kad.handler import KadServer, handle_request
from overlay.kad.keyspace import Contact, fake_peer_id
from overlay.kad.lookup import Finished, Lookup, LookupKind, LookupResult, SendRequest, Waiting
from overlay.kad.messages import KadMessage, MessageType, PeerInfo
from overlay.kad.providers import ProviderConfig, ProviderStore
from overlay.kad.records import default_registry
from overlay.kad.routing import RoutingConfig, RoutingTable
from overlay.kad.store import MemoryRecordStore, StoreConfig

NOW = 1_000.0


def ip4(a: int, b: int, c: int, d: int, port: int = 4001) -> bytes:
    """Binary /ip4/a.b.c.d/udp/port/quic-v1."""
    return bytes([4, a, b, c, d]) + bytes([0x91, 0x02]) + port.to_bytes(2, "big") + bytes([0xCD, 0x03])


def ip6(prefix: bytes, suffix: int = 1) -> bytes:
    raw = prefix + bytes(16 - len(prefix) - 2) + suffix.to_bytes(2, "big")
    return bytes([41]) + raw + bytes([0x91, 0x02, 0x0F, 0xA1, 0xCD, 0x03])


def contacts(count: int, seed: int = 1) -> list[Contact]:
    rng = random.Random(seed)
    return [Contact.of(fake_peer_id(rng)) for _ in range(count)]


def contact_in_bucket(local: int, index: int, rng: random.Random, addrs: tuple[bytes, ...] = ()) -> Contact:
    """A contact whose key lies in bucket ``index`` of ``local``: draws IDs
    until one lands (cheap for the far buckets tests use)."""
    while True:
        peer = fake_peer_id(rng)
        contact = Contact.of(peer, addrs)
        if (contact.key ^ local).bit_length() - 1 == index:
            return contact


class Cluster:
    """``n`` servers that all know each other (tables built from everyone),
    answering requests in-process: a lookup pair helper at fixed ``now``."""

    def __init__(self, n: int, seed: int = 7, k: int = 20) -> None:
        self.contacts = contacts(n, seed)
        self.by_id = {c.peer_id: c for c in self.contacts}
        self.servers: dict[PeerId, KadServer] = {}
        registry = default_registry()
        self.registry = registry
        for i, me in enumerate(self.contacts):
            table = RoutingTable(me.key, RoutingConfig(k=k), random.Random(i), NOW)
            table.load(c for c in self.contacts if c is not me)
            self.servers[me.peer_id] = KadServer(
                PeerInfo(me.peer_id),
                table,
                MemoryRecordStore(StoreConfig(), registry),
                ProviderStore(ProviderConfig()),
            )
        self.requests: list[PeerId] = []

    def answer(self, kind: LookupKind, target: bytes, peer: PeerId, sender: PeerId) -> KadMessage | None:
        message_type = {
            LookupKind.FIND_NODE: MessageType.FIND_NODE,
            LookupKind.GET_VALUE: MessageType.GET_VALUE,
            LookupKind.GET_PROVIDERS: MessageType.GET_PROVIDERS,
        }[kind]
        return handle_request(self.servers[peer], KadMessage(message_type, target), sender, NOW)


Responder = Callable[[SendRequest], KadMessage | None]


def run_lookup(
    lookup: Lookup,
    respond: Responder,
    to_contact: Callable[[PeerInfo], Contact],
    max_steps: int = 10_000,
) -> tuple[LookupResult, list[SendRequest]]:
    """Drive ``lookup`` to the end, answering every request at once."""
    sent: list[SendRequest] = []
    queue: list[SendRequest] = []
    for _ in range(max_steps):
        action = lookup.next(NOW)
        if isinstance(action, Finished):
            return action.result, sent
        if isinstance(action, SendRequest):
            sent.append(action)
            queue.append(action)
            continue
        assert isinstance(action, Waiting)
        assert queue, "lookup waits although nothing is in flight"
        request = queue.pop(0)
        answer = respond(request)
        if answer is None:
            lookup.on_failure(request.peer.peer_id, NOW)
        else:
            lookup.on_success(
                request.peer.peer_id,
                [to_contact(info) for info in answer.closer_peers],
                NOW,
                record=answer.record,
                providers=answer.provider_peers,
            )
    raise AssertionError("lookup did not finish")


def brute_closest(items: Sequence[Contact], key: int, n: int) -> list[Contact]:
    return sorted(items, key=lambda c: c.key ^ key)[:n]
