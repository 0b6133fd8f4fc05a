"""Hints in the stop CONNECT: our relay names where the initiator's
connection comes from (the spec needs only its id), and the stop side
passes at most two addresses on to its observers before the upgrade."""

from __future__ import annotations

import asyncio

from multiaddr import Multiaddr

from overlay.relay.client import STOP_HINT_ADDRS, StopHint
from overlay.relay.messages import Peer, StopMessage, StopType, decode_stop, encode_stop
from overlay.relay.server import STOP_HINTS_MAX, RelayServer

from tests.relay.conftest import RelayNet


def _peer_addr(host: object) -> tuple[str, int]:
    endpoint = host.endpoints()[0]  # type: ignore[attr-defined]
    ip, port = endpoint.local_address[:2]
    return str(ip), int(port)


async def test_the_stop_connect_names_where_the_initiator_connects_from(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    hints: list[StopHint] = []
    a.client.observe_stops(hints.append)
    async with asyncio.timeout(15):
        conn = await b.host.connect(a.client.circuit_addrs(with_self=True)[0])
    assert conn.path == "relayed"
    assert len(hints) == 1
    hint = hints[0]
    assert hint.relay == net.relay.peer_id and hint.peer == b.host.peer_id
    # B's socket, as the relay saw it (loopback: no NAT in between).
    ip, port = _peer_addr(b.host)
    assert [Multiaddr(raw) for raw in hint.addrs] == [
        Multiaddr(f"/ip4/{ip}/udp/{port}/quic-v1")]
    assert len(hint.addrs) <= STOP_HINTS_MAX


async def test_a_failing_observer_costs_nothing_and_can_be_removed(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    seen: list[StopHint] = []

    def broken(hint: StopHint) -> None:
        raise RuntimeError("an observer's bug")

    a.client.observe_stops(broken)
    remove = a.client.observe_stops(seen.append)
    remove()
    async with asyncio.timeout(15):
        conn = await b.host.connect(a.client.circuit_addrs(with_self=True)[0])
        assert await b.host.ping(a.host.peer_id) > 0
    assert conn.path == "relayed" and seen == []
    assert a.client.circuits_accepted == 1


async def test_the_stop_side_keeps_at_most_two_addresses(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    many = tuple(Multiaddr(f"/ip4/203.0.113.{n}/udp/4001/quic-v1").to_bytes()
                 for n in range(1, 6))
    server: RelayServer = net.server
    honest = server._open_stop

    async def generous(src, dst, limit, addrs=()):  # type: ignore[no-untyped-def]
        return await honest(src, dst, limit, many)

    server._open_stop = generous  # type: ignore[method-assign]
    hints: list[StopHint] = []
    a.client.observe_stops(hints.append)
    async with asyncio.timeout(15):
        await b.host.connect(a.client.circuit_addrs(with_self=True)[0])
    assert [h.addrs for h in hints] == [many[:STOP_HINT_ADDRS]]


def test_stop_peer_addrs_round_trip_and_old_messages_still_decode() -> None:
    from overlay.identity import Ed25519PrivateKey, PeerId

    peer = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    addr = Multiaddr("/ip4/203.0.113.7/udp/4001/quic-v1").to_bytes()
    message = StopMessage(StopType.CONNECT, Peer(peer, (addr,)))
    assert decode_stop(encode_stop(message)) == message
    bare = StopMessage(StopType.CONNECT, Peer(peer))
    assert decode_stop(encode_stop(bare)).peer == Peer(peer, ())
