"""The re-punch driver with real hosts on loopback: A and C, connected
through relay R and punched by DCUtR, keep a stream open; then the direct
path goes silent (each side's connection drops every datagram it is
handed, as a NAT that moved its mapping would make them vanish).  The
re-punch service on each side notices, the side with the smaller peer ID
redials through the relay, DCUtR punches a new direct connection, and both
sides' records say "direct again".

No sleeps: every wait is on an event the code under test sets (the
re-punch and DCUtR services' ``activity``, the host's changes)."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest

from overlay.host import Host
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import Connection
from overlay.identity import Ed25519PrivateKey
from overlay.nat.dcutr_core import DcutrConfig
from overlay.nat.dcutr_service import DcutrService, DcutrServiceConfig
from overlay.nat.repunch_core import RepunchConfig
from overlay.nat.repunch_service import RepunchService
from overlay.relay.client import RelayClient
from overlay.relay.server import RelayServer
from overlay.relay.server_core import RelayLimits
from tests.waiting import host_changes, wait_until

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"
HOLD = "/test/hold/1.0.0"

# Loopback round trips are well under a millisecond: the lab's seconds
# shrink to tenths, keeping their proportions.
FAST = RepunchConfig(probe_after=0.3, probe_interval=0.1, dead_after=0.6, probe_grace=0.2,
                     yield_delay=0.3, retry_after=0.3, upgrade_after=1.0,
                     outcome_timeout=15.0, sample_interval=0.05)


@dataclass
class Side:
    host: Host
    dcutr: DcutrService
    repunch: RepunchService

    def direct(self, peer: Host) -> list[Connection]:
        return [c for c in self.host.connections()
                if c.remote_peer == peer.peer_id and c.path == "direct"]

    def record(self, peer: Host) -> dict[str, object]:
        return self.repunch.peer_fields(peer.peer_id).get("repunch") or {}


@dataclass
class Pair:
    relay: Host
    a: Side
    """The smaller peer ID: it redials, C yields."""
    c: Side

    def circuit(self, to: Host) -> str:
        return (f"{self.relay.listen_addrs()[0]}/p2p/{self.relay.peer_id}"
                f"/p2p-circuit/p2p/{to.peer_id}")


def _ordered_keys() -> tuple[Ed25519PrivateKey, Ed25519PrivateKey]:
    """Two keys, the first with the smaller peer ID (which side redials
    and which yields follows from it)."""
    from overlay.identity import PeerId

    keys = [Ed25519PrivateKey.generate() for _ in range(2)]
    keys.sort(key=lambda k: PeerId.from_public_key(k.public_key()).to_bytes())
    return keys[0], keys[1]


def _same(dcutr: DcutrService) -> DcutrService:
    return dcutr


async def _hold(stream: NegotiatedStream) -> None:
    """Keep the stream open until the peer ends it (or the path dies)."""
    while await stream.read():
        pass


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    dcutr_config = DcutrServiceConfig(core=DcutrConfig(allow_private=True), unilateral=False,
                                      relayed_grace=30.0, idle_check=0.05)
    async with AsyncExitStack() as stack:
        relay_key = Ed25519PrivateKey.generate()
        relay = await stack.enter_async_context(Host(relay_key))
        await relay.listen([LOOPBACK])
        await stack.enter_async_context(RelayServer(relay, relay_key, RelayLimits()))
        sides = []
        for seed, key in enumerate(_ordered_keys()):
            host = await stack.enter_async_context(Host(key))
            await host.listen([LOOPBACK])
            host.set_stream_handler(HOLD, _hold)
            dcutr = await stack.enter_async_context(
                DcutrService(host, dcutr_config, rng=random.Random(seed)))
            repunch = await stack.enter_async_context(
                RepunchService(host, FAST, dcutr=functools.partial(_same, dcutr)))
            client = await stack.enter_async_context(RelayClient(host))
            client.observe_stops(dcutr.on_stop_hint)
            await host.connect(f"{relay.listen_addrs()[0]}/p2p/{relay.peer_id}")
            await client.reserve(relay.peer_id)
            sides.append(Side(host, dcutr, repunch))
        yield Pair(relay, sides[0], sides[1])


def _punched(side: Side, peer: Side) -> bool:
    """One direct connection to ``peer``, and hole punching made it."""
    direct = side.direct(peer.host)
    return len(direct) == 1 and side.host.is_punched(direct[0])


def _silence(conn: Connection) -> None:
    """From now on ``conn`` gets none of its datagrams (the endpoint hands
    them to the connection, which drops them): its path is dead both ways
    once both sides do it, and only this connection's."""
    def drop(data: bytes, addr: object) -> None:
        return None

    conn._datagram_received = drop  # type: ignore[attr-defined]


@pytest.mark.parametrize("dialler", ["smaller-id", "larger-id"])
async def test_a_dead_punched_path_is_punched_again(pair: Pair, dialler: str) -> None:
    a, c = pair.a, pair.c
    first, second = (a, c) if dialler == "smaller-id" else (c, a)
    async with asyncio.timeout(40):
        await first.host.connect(pair.circuit(second.host))
        await wait_until(lambda: len(first.direct(second.host)) == 1
                         and len(second.direct(first.host)) == 1
                         and all(first.host.is_punched(x) for x in first.direct(second.host))
                         and all(second.host.is_punched(x) for x in second.direct(first.host)),
                         first.dcutr.activity, second.dcutr.activity, timeout=15)
        dead_a, dead_c = a.direct(c.host)[0], c.direct(a.host)[0]
        # The peer matters: a stream is open on the punched connection.
        stream = await a.host.new_stream(c.host.peer_id, [HOLD])
        stream.write(b"hold")
        await stream.drain()
        assert stream.conn is dead_a
        with host_changes(a.host) as a_changed, host_changes(c.host) as c_changed:
            _silence(dead_a)
            _silence(dead_c)
            await wait_until(
                lambda: (a.record(c.host).get("last_outcome") == "direct again"
                         and c.record(a.host).get("last_outcome") == "direct again"
                         and _punched(a, c) and _punched(c, a)),
                a.repunch.activity, c.repunch.activity, a.dcutr.activity, c.dcutr.activity,
                a_changed, c_changed, timeout=30)
        assert dead_a.is_closed and dead_c.is_closed
        new_a, new_c = a.direct(c.host), c.direct(a.host)
        assert len(new_a) == 1 and len(new_c) == 1
        assert a.host.is_punched(new_a[0]) and c.host.is_punched(new_c[0])
        assert (await a.host.ping_service.ping(c.host.peer_id)).path == "direct"
        for side, peer in ((a, c), (c, a)):
            record = side.record(peer.host)
            assert record["count"] == 1, record
            counters = side.repunch.counters()
            assert counters["direct_again"] == 1, counters
        # The smaller ID redialled; the larger one waited for it.
        assert a.repunch.counters()["repunches"] == 1
        assert a.record(c.host)["detect_ms"] is not None
