"""The circuit transport over in-memory circuits: Noise + yamux both ways,
streams, ping and identify on a relayed connection, the relay's limits, and
direct connections preferred over relayed ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from multiaddr import Multiaddr

from overlay.errors import ConnectionClosed, PeerIdMismatch
from overlay.host import Host
from overlay.host.muxed import ConnectionLimitReached, MuxedConnection
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.relay.circuit import Circuit, CircuitLimit
from overlay.wire.memory import MemoryStream, memory_stream_pair
from tests.waiting import wait_for_hosts


def _peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


@dataclass
class Fabric:
    """Plays the relay: hands each side of an in-memory stream pair to the
    dialer (as ``open_circuit``'s result) and to the target (``on_circuit``)."""

    tg: asyncio.TaskGroup
    hosts: dict[PeerId, Host] = field(default_factory=dict)
    limit: CircuitLimit | None = None
    claimed_dialer: PeerId | None = None
    """What the relay tells the target about the dialer (a lying relay)."""
    inbound_errors: list[BaseException] = field(default_factory=list)
    inbound_error: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when an entry joins ``inbound_errors``."""
    raw: list[tuple[MemoryStream, MemoryStream]] = field(default_factory=list)

    def attach(self, host: Host) -> None:
        self.hosts[host.peer_id] = host
        host.circuit_transport.open_circuit = self.open_circuit

    async def open_circuit(self, host: Host, relay: PeerId, target: PeerId) -> Circuit:
        ours, theirs = memory_stream_pair()
        self.raw.append((ours, theirs))
        dialer = self.claimed_dialer or host.peer_id
        inbound = Circuit(theirs, relay, dialer, self.limit, initiator=False)
        self.tg.create_task(self._deliver(self.hosts[target], inbound))
        return Circuit(ours, relay, target, self.limit, initiator=True)

    async def _deliver(self, host: Host, circuit: Circuit) -> None:
        try:
            await host.circuit_transport.on_circuit(circuit)
        except (ConnectionClosed, PeerIdMismatch) as exc:
            self.inbound_errors.append(exc)
            self.inbound_error.set()


@pytest.fixture
async def fabric() -> AsyncIterator[Fabric]:
    async with asyncio.TaskGroup() as tg:
        yield Fabric(tg)


async def _pair(memory_hosts, fabric: Fabric) -> tuple[Host, Host]:  # type: ignore[no-untyped-def]
    a, _ = await memory_hosts()
    c, _ = await memory_hosts()
    fabric.attach(a)
    fabric.attach(c)
    return a, c


async def _wait_for(predicate, *hosts: Host) -> None:  # type: ignore[no-untyped-def]
    # The other side's upgrade (or end) finishes in its own task: re-check
    # whenever one of the hosts tells its listeners of a connection.
    await wait_for_hosts(predicate, *hosts, timeout=5)


async def _rtt_measured(conn: MuxedConnection) -> None:
    # The connection's start-up yamux ping is answered in its own task, and
    # nothing announces it (MuxedConnection would need an event set where
    # _measure_rtt stores the result): until then, yield loop turns.
    async with asyncio.timeout(5):
        while conn.smoothed_rtt is None:
            await asyncio.sleep(0)


async def test_relayed_connection_both_ways(memory_hosts, fabric: Fabric) -> None:  # type: ignore[no-untyped-def]
    a, c = await _pair(memory_hosts, fabric)
    relay = _peer()
    fabric.limit = CircuitLimit(duration=120.0, data=1 << 17)
    addr = f"/p2p/{relay}/p2p-circuit/p2p/{c.peer_id}"
    conn = await a.connect(addr)
    assert isinstance(conn, MuxedConnection)
    assert conn.path == "relayed" and conn.remote_peer == c.peer_id and conn.is_initiator
    assert conn.remote_address is None
    assert str(conn.remote_multiaddr) == f"/p2p/{relay}/p2p-circuit"
    assert conn.limit == CircuitLimit(120.0, 1 << 17)
    await _wait_for(lambda: c.best_connection(a.peer_id) is not None, c)
    back = c.best_connection(a.peer_id)
    assert back is not None and back.path == "relayed" and not back.is_initiator
    # The dialed circuit address is remembered for the peer.
    assert Multiaddr(f"/p2p/{relay}/p2p-circuit") in a.peerstore.addrs(c.peer_id)

    # Ping and identify run over the relayed connection, both ways.
    pong = await a.ping_service.ping(c.peer_id)
    assert pong.path == "relayed" and pong.rtt > 0
    assert (await c.ping_service.ping(a.peer_id)).path == "relayed"
    info = await a.identify(c.peer_id)
    assert info.observed_addr is None  # nothing observable through a relay
    assert "/ipfs/ping/1.0.0" in info.protocols

    # A stream of our own, bytes both ways.
    async def echo(stream) -> None:  # type: ignore[no-untyped-def]
        data = await stream.readexactly(5)
        stream.write(data[::-1])
        await stream.drain()
        await stream.close()

    c.set_stream_handler("/test/echo", echo)
    stream = await a.new_stream(c.peer_id, ["/test/echo"])
    assert stream.conn is conn
    stream.write(b"hello")
    await stream.drain()
    assert await stream.readexactly(5) == b"olleh"
    await _rtt_measured(conn)


async def test_the_time_limit_closes_the_connection(memory_hosts, fabric: Fabric) -> None:  # type: ignore[no-untyped-def]
    a, c = await _pair(memory_hosts, fabric)
    fabric.limit = CircuitLimit(duration=0.2, data=None)
    conn = await a.connect(f"/p2p/{_peer()}/p2p-circuit/p2p/{c.peer_id}")
    async with asyncio.timeout(5):
        await conn.wait_closed()
    assert conn.is_closed and isinstance(conn.close_reason, ConnectionLimitReached)
    await _wait_for(lambda: a.best_connection(c.peer_id) is None, a)
    await _wait_for(lambda: c.best_connection(a.peer_id) is None, c)


async def test_the_end_of_the_circuit_stream_closes_both_sides(memory_hosts, fabric: Fabric) -> None:  # type: ignore[no-untyped-def]
    a, c = await _pair(memory_hosts, fabric)
    conn = await a.connect(f"/p2p/{_peer()}/p2p-circuit/p2p/{c.peer_id}")
    await _wait_for(lambda: c.best_connection(a.peer_id) is not None, c)
    ours, theirs = fabric.raw[-1]
    ours.reset()  # the relay cut the circuit (its data limit, say)
    theirs.reset()
    async with asyncio.timeout(5):
        await conn.wait_closed()
    await _wait_for(lambda: c.best_connection(a.peer_id) is None, c)
    assert a.peers() == []


async def test_a_relay_naming_the_wrong_dialer_is_refused(memory_hosts, fabric: Fabric) -> None:  # type: ignore[no-untyped-def]
    a, c = await _pair(memory_hosts, fabric)
    fabric.claimed_dialer = _peer()
    async with asyncio.timeout(5):
        try:
            conn = await a.connect(f"/p2p/{_peer()}/p2p-circuit/p2p/{c.peer_id}")
        except ConnectionClosed:
            pass  # the refusal came before our side finished
        else:
            await conn.wait_closed()  # C reset the circuit after Noise
    async with asyncio.timeout(5):
        await fabric.inbound_error.wait()
    assert isinstance(fabric.inbound_errors[0], PeerIdMismatch)
    assert c.best_connection(a.peer_id) is None


async def test_direct_is_preferred_over_relayed(memory_hosts, fabric: Fabric) -> None:  # type: ignore[no-untyped-def]
    a, c = await _pair(memory_hosts, fabric)
    circuit_addr = f"/p2p/{_peer()}/p2p-circuit/p2p/{c.peer_id}"
    relayed = await a.connect(circuit_addr)
    assert a.best_connection(c.peer_id) is relayed
    # Asking for the direct address dials it although a relayed connection exists.
    direct_addr = f"{c.listen_addrs()[0]}/p2p/{c.peer_id}"
    direct = await a.connect(direct_addr)
    assert direct is not relayed and direct.path == "direct"
    assert a.best_connection(c.peer_id) is direct
    # Streams and pings now go direct; a circuit dial returns the direct one.
    stream = await a.new_stream(c.peer_id, ["/ipfs/ping/1.0.0"])
    assert stream.conn is direct
    stream.reset()
    assert (await a.ping_service.ping(c.peer_id)).path == "direct"
    assert await a.connect(circuit_addr) is direct
    # The relayed connection stays usable until it ends on its own.
    assert not relayed.is_closed
    direct.close(0, "test")
    await direct.wait_closed()
    assert a.best_connection(c.peer_id) is relayed
    assert (await a.ping_service.ping(c.peer_id)).path == "relayed"


async def test_a_kept_ping_stream_moves_to_a_new_direct_connection(memory_hosts, fabric: Fabric) -> None:  # type: ignore[no-untyped-def]
    a, c = await _pair(memory_hosts, fabric)
    await a.connect(f"/p2p/{_peer()}/p2p-circuit/p2p/{c.peer_id}")
    assert (await a.ping_service.ping(c.peer_id)).path == "relayed"
    await a.connect(f"{c.listen_addrs()[0]}/p2p/{c.peer_id}")
    assert (await a.ping_service.ping(c.peer_id)).path == "direct"


async def test_closing_a_relayed_connection_ends_the_peers_side(memory_hosts, fabric: Fabric) -> None:  # type: ignore[no-untyped-def]
    a, c = await _pair(memory_hosts, fabric)
    conn = await a.connect(f"/p2p/{_peer()}/p2p-circuit/p2p/{c.peer_id}")
    await _wait_for(lambda: c.best_connection(a.peer_id) is not None, c)
    back = c.best_connection(a.peer_id)
    assert back is not None
    conn.close(0, "bye")
    assert conn.is_closed and "bye" in str(conn.close_reason)
    async with asyncio.timeout(5):
        await back.wait_closed()  # our Go Away ended the peer's session
        await conn.wait_closed()
    await _wait_for(lambda: a.peer_id not in c.peers() and c.peer_id not in a.peers(), a, c)


async def test_an_aborted_relayed_connection_ends_the_peers_side(memory_hosts, fabric: Fabric) -> None:  # type: ignore[no-untyped-def]
    a, c = await _pair(memory_hosts, fabric)
    conn = await a.connect(f"/p2p/{_peer()}/p2p-circuit/p2p/{c.peer_id}")
    assert isinstance(conn, MuxedConnection)
    await _wait_for(lambda: c.best_connection(a.peer_id) is not None, c)
    back = c.best_connection(a.peer_id)
    assert back is not None
    conn.abort_for_test()  # no Go Away: the circuit stream is reset under it
    async with asyncio.timeout(5):
        await back.wait_closed()
    assert back.close_reason is not None
