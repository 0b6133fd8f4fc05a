"""Circuit addresses through the host: B dials ``…/p2p/R/p2p-circuit/p2p/A``
and the connection (Noise + yamux over the circuit) carries ping and
identify; A is reachable only because it holds a reservation on R."""

from __future__ import annotations

import asyncio

import pytest

from overlay.errors import DialError, OverlayError
from overlay.relay.server_core import RelayLimits

from tests.relay.conftest import RelayNet


async def test_dial_circuit_address_and_ping(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    addr = a.client.circuit_addrs(with_self=True)[0]
    async with asyncio.timeout(15):
        conn = await b.host.connect(addr)
        assert conn.path == "relayed" and conn.remote_peer == a.host.peer_id
        assert conn.limit is not None and conn.limit.data == 128 * 1024
        assert await b.host.ping(a.host.peer_id) > 0
        info = await b.host.identify(a.host.peer_id)
    assert info is not None
    stats = net.server.stats()
    assert stats.circuits_active == 1 and a.client.circuits_accepted == 1


async def test_dial_without_reservation_fails_typed(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    addr = f"{net.relay_addr()}/p2p-circuit/p2p/{a.host.peer_id}"
    with pytest.raises(OverlayError) as info:
        async with asyncio.timeout(15):
            await b.host.connect(addr)
    assert "NO_RESERVATION" in str(info.value) or isinstance(info.value, DialError)
    assert net.server.stats().refusals == {"no_reservation": 1}


@pytest.mark.parametrize("limits", [RelayLimits(circuit_data=None, circuit_duration=None)])
async def test_unlimited_relay_gives_unlimited_connection(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    async with asyncio.timeout(15):
        conn = await b.host.connect(a.client.circuit_addrs(with_self=True)[0])
        assert conn.limit is None
        # A answered, so A adopted its end: it can use it the other way too.
        assert await b.host.ping(a.host.peer_id) > 0
        assert await a.host.ping(b.host.peer_id) > 0


async def test_relay_lying_about_the_caller_costs_the_circuit(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    stranger = (await net.make_node()).host.peer_id
    honest = net.server._open_stop

    async def lying(src, dst, limit, addrs=()):  # type: ignore[no-untyped-def]
        return await honest(stranger, dst, limit, addrs)

    net.server._open_stop = lying  # type: ignore[method-assign]
    # B's side of Noise XX may finish before A checks B's identity against
    # what the relay claimed, so B's dial can succeed and die right after.
    try:
        async with asyncio.timeout(15):
            await b.host.connect(a.client.circuit_addrs(with_self=True)[0])
    except OverlayError:
        pass
    transport = a.host.circuit_transport
    async with asyncio.timeout(10):
        while transport.circuits_refused == 0:
            net.server.circuit_done.clear()
            await net.server.circuit_done.wait()
    assert transport.circuits_accepted == 0
    assert b.host.peer_id not in a.host.peers()
    # A and the relay carry on.
    assert await a.host.ping(net.relay.peer_id) > 0


async def test_relay_lying_about_the_target_fails_the_dial(net: RelayNet) -> None:
    from overlay.errors import PeerIdMismatch

    a, b, c = await net.make_node(), await net.make_node(), await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    await c.client.reserve(net.relay.peer_id)
    honest = net.server._open_stop

    async def misroute(src, dst, limit, addrs=()):  # type: ignore[no-untyped-def]
        return await honest(src, c.host.peer_id, limit, addrs)

    net.server._open_stop = misroute  # type: ignore[method-assign]
    with pytest.raises(PeerIdMismatch):
        async with asyncio.timeout(15):
            await b.host.connect(a.client.circuit_addrs(with_self=True)[0])
    assert a.host.peer_id not in b.host.peers()
