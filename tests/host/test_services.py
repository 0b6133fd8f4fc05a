"""Ping and identify as services beside the host: what they register, what
they report, and that leaving one withdraws its protocols."""

from __future__ import annotations

import asyncio

import pytest

from overlay.errors import ProtocolNotSupported
from overlay.host import IDENTIFY_PROTOCOL, IDENTIFY_PUSH_PROTOCOL, PING_PROTOCOL, PingService


async def test_ping_service_reports_the_connection_and_keeps_one_stream(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, rec_a = await memory_hosts()
    b, _ = await memory_hosts()
    conn = await a.connect(f"{b.listen_addrs()[0]}/p2p/{b.peer_id}")
    await rec_a.wait_for(lambda: bool(rec_a.identified_by(b.peer_id)))  # its stream is done
    opened_before = conn.streams_opened
    first = await a.ping_service.ping(b.peer_id)
    second = await a.ping_service.ping(b.peer_id)
    assert first.path == second.path == "direct"
    assert first.remote_multiaddr == conn.remote_multiaddr == b.listen_addrs()[0]
    assert first.rtt > 0 and await a.ping(b.peer_id) > 0
    # One ping stream for all three rounds.
    assert conn.streams_opened - opened_before == 1


async def test_leaving_the_ping_service_withdraws_the_protocol(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, rec_a = await memory_hosts()
    b, _ = await memory_hosts()
    await a.connect(f"{b.listen_addrs()[0]}/p2p/{b.peer_id}")
    await rec_a.wait_for(lambda: a.peerstore.supports(b.peer_id, PING_PROTOCOL))
    await b.ping_service.__aexit__(None, None, None)
    assert PING_PROTOCOL not in b.protocols()
    # B pushes its shrunken protocol list; A's peerstore follows.
    await rec_a.wait_for(lambda: not a.peerstore.supports(b.peer_id, PING_PROTOCOL))
    with pytest.raises(ProtocolNotSupported):
        await a.ping_service.ping(b.peer_id)


async def test_a_ping_service_entered_on_its_own_serves(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await memory_hosts()
    b, _ = await memory_hosts()
    await a.connect(f"{b.listen_addrs()[0]}/p2p/{b.peer_id}")
    await b.ping_service.__aexit__(None, None, None)
    # The service is usable on its own, as kad's is: enter it on B again.
    async with PingService(b, timeout=5.0, idle_timeout=5.0, max_inbound_streams=1) as svc:
        assert PING_PROTOCOL in b.protocols()
        pong = await a.ping_service.ping(b.peer_id)
        assert pong.path == "direct"
        assert (await svc.ping(a.peer_id)).rtt > 0
        with pytest.raises(ValueError):
            PingService(b, timeout=0)
    assert PING_PROTOCOL not in b.protocols()


async def test_identify_service_asks_every_new_connection(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, rec_a = await memory_hosts()
    b, _ = await memory_hosts()
    await a.connect(f"{b.listen_addrs()[0]}/p2p/{b.peer_id}")
    await rec_a.wait_for(lambda: len(rec_a.identified_by(b.peer_id)) == 1)
    info = rec_a.identified_by(b.peer_id)[0]
    assert {PING_PROTOCOL, IDENTIFY_PROTOCOL, IDENTIFY_PUSH_PROTOCOL} <= set(info.protocols)
    assert info.listen_addrs == tuple(b.advertised_addrs())
    # Asked directly, the same service answers through the host convenience.
    again = await a.identify(b.peer_id)
    assert again.protocols == info.protocols
    assert (await a.identify_service.identify(b.peer_id)).peer_id == b.peer_id


async def test_leaving_the_identify_service_withdraws_it(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await memory_hosts()
    b, _ = await memory_hosts()
    await b.identify_service.__aexit__(None, None, None)
    assert IDENTIFY_PROTOCOL not in b.protocols()
    await a.connect(f"{b.listen_addrs()[0]}/p2p/{b.peer_id}")
    with pytest.raises(ProtocolNotSupported):
        async with asyncio.timeout(5):
            await a.identify(b.peer_id)
