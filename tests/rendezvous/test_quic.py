"""Rendezvous between real hosts over QUIC on loopback: register, discover
with addresses and cookies, unregister, expiry on the point's clock,
refusals, and hostile bytes that cost only their own stream."""

from __future__ import annotations

import asyncio

import pytest

from overlay.errors import ProtocolNotSupported, RemoteProtocolError, StreamClosed, StreamReset
from overlay.identity import Ed25519PrivateKey, PeerId, PeerRecord, seal_peer_record
from overlay.rendezvous import (
    PROTOCOL_ID,
    Discover,
    DiscoverResponse,
    RefreshConfig,
    Refresher,
    Register,
    RegisterResponse,
    RendezvousRefused,
    Status,
    decode_message,
    encode_message,
)
from overlay.rendezvous.messages import MAX_REQUEST_SIZE
from overlay.wire import encode_uvarint, frame, read_frame

from tests.rendezvous.conftest import RendezvousNet


async def test_two_register_a_third_discovers_both_with_addresses(rdv: RendezvousNet) -> None:
    a, b, c = [await rdv.make_peer() for _ in range(3)]
    assert await a.client.register(rdv.point_id, "chat", 3600) == 3600
    assert await b.client.register(rdv.point_id, "chat") == 7200
    await b.client.register(rdv.point_id, "other")
    page = await c.client.discover(rdv.point_id, "chat")
    assert {p.peer: p.addrs for p in page.peers} == {
        a.host.peer_id: tuple(a.host.listen_addrs()),
        b.host.peer_id: tuple(b.host.listen_addrs())}
    assert page.rejected == 0 and all(p.ns == "chat" for p in page.peers)
    # The addresses work: C reaches A with nothing but what it discovered.
    found = next(p for p in page.peers if p.peer == a.host.peer_id)
    await c.host.connect(f"{found.addrs[0]}/p2p/{found.peer}")
    assert await c.host.ping(a.host.peer_id) > 0
    everything = await c.client.discover(rdv.point_id, "")
    assert len(everything.peers) == 3


async def test_unregister_removes(rdv: RendezvousNet) -> None:
    a, b, c = [await rdv.make_peer() for _ in range(3)]
    await a.client.register(rdv.point_id, "chat")
    await b.client.register(rdv.point_id, "chat")
    await a.client.unregister(rdv.point_id, "chat")
    await rdv.until(lambda: rdv.server.registry.get("chat", a.host.peer_id) is None)
    page = await c.client.discover(rdv.point_id, "chat")
    assert [p.peer for p in page.peers] == [b.host.peer_id]


async def test_registrations_expire_on_the_points_clock(rdv: RendezvousNet) -> None:
    a, c = await rdv.make_peer(), await rdv.make_peer()
    await a.client.register(rdv.point_id, "short", 60)
    rdv.clock.now += 59
    page = await c.client.discover(rdv.point_id, "short")
    assert [p.ttl for p in page.peers] == [1]
    rdv.clock.now += 1
    assert (await c.client.discover(rdv.point_id, "short")).peers == ()


async def test_cookies_page_and_then_return_only_news(rdv: RendezvousNet) -> None:
    a, b, c, d = [await rdv.make_peer() for _ in range(4)]
    await a.client.register(rdv.point_id, "app")
    await b.client.register(rdv.point_id, "app")
    first = await d.client.discover(rdv.point_id, "app", limit=1)
    second = await d.client.discover(rdv.point_id, "app", limit=1, cookie=first.cookie)
    assert [p.peer for p in first.peers + second.peers] == [a.host.peer_id, b.host.peer_id]
    third = await d.client.discover(rdv.point_id, "app", cookie=second.cookie)
    assert third.peers == ()
    await c.client.register(rdv.point_id, "app")
    news = await d.client.discover(rdv.point_id, "app", cookie=third.cookie)
    assert [p.peer for p in news.peers] == [c.host.peer_id]
    with pytest.raises(RendezvousRefused) as info:
        await d.client.discover(rdv.point_id, "elsewhere", cookie=news.cookie)
    assert info.value.status == Status.E_INVALID_COOKIE


async def test_refusals_reach_the_client_as_typed_errors(rdv: RendezvousNet) -> None:
    a = await rdv.make_peer()
    with pytest.raises(RendezvousRefused) as info:
        await a.client.register(rdv.point_id, "app", 73 * 3600)
    assert info.value.status == Status.E_INVALID_TTL and "E_INVALID_TTL" in str(info.value)
    # A presents another peer's genuine signed record: not authorized.
    other = Ed25519PrivateKey.generate()
    other_id = PeerId.from_public_key(other.public_key())
    envelope = seal_peer_record(other, PeerRecord(other_id, 1, (a.host.listen_addrs()[0]
                                                                 .to_bytes(),)))
    stream = await _raw_stream(rdv, a)
    stream.write(frame(encode_message(Register("app", envelope))))
    await stream.drain()
    async with asyncio.timeout(10):
        data = await read_frame(stream, 1 << 20)
    assert data is not None
    reply = decode_message(data)
    assert isinstance(reply, RegisterResponse) and reply.status == Status.E_NOT_AUTHORIZED
    assert len(rdv.server.registry) == 0


async def _raw_stream(rdv: RendezvousNet, peer):  # type: ignore[no-untyped-def]
    return await peer.host.new_stream(rdv.point_id, [PROTOCOL_ID])


@pytest.mark.parametrize("payload", [
    encode_uvarint(MAX_REQUEST_SIZE + 1) + b"x" * 100,  # oversized: refused by its prefix
    frame(b"\xff\xff\xff"),  # malformed protobuf
    frame(bytes([0x08, 0x07])),  # unknown type
    frame(encode_message(DiscoverResponse())),  # a response is not a request
])
async def test_hostile_bytes_cost_only_their_stream(rdv: RendezvousNet, payload: bytes) -> None:
    a, b = await rdv.make_peer(), await rdv.make_peer()
    await b.client.register(rdv.point_id, "app")
    dropped = rdv.server.dropped_streams
    stream = await _raw_stream(rdv, a)
    stream.write(payload)
    await stream.drain()
    with pytest.raises((StreamReset, StreamClosed, RemoteProtocolError)):
        async with asyncio.timeout(10):
            while await read_frame(stream, 1 << 20) is not None:
                pass
            raise StreamClosed("closed without a reset")  # a clean EOF would be wrong too
    await rdv.until(lambda: rdv.server.dropped_streams > dropped)
    # The same connection, the point and other peers carry on.
    assert a.host.connections() and not a.host.connections()[0].is_closed
    page = await a.client.discover(rdv.point_id, "app")
    assert [p.peer for p in page.peers] == [b.host.peer_id]
    assert await a.client.register(rdv.point_id, "app") == 7200


async def test_several_requests_on_one_stream(rdv: RendezvousNet) -> None:
    a = await rdv.make_peer()
    await a.client.register(rdv.point_id, "app")
    stream = await _raw_stream(rdv, a)
    for _ in range(3):
        stream.write(frame(encode_message(Discover("app"))))
        await stream.drain()
        async with asyncio.timeout(10):
            data = await read_frame(stream, 1 << 20)
        assert data is not None
        reply = decode_message(data)
        assert isinstance(reply, DiscoverResponse) and len(reply.registrations) == 1
    await stream.close()


async def test_the_refresher_re_registers_before_the_ttl_ends(rdv: RendezvousNet) -> None:
    a = await rdv.make_peer()
    granted = await a.client.register(rdv.point_id, "app", 10)
    first = rdv.server.registry.get("app", a.host.peer_id)
    assert first is not None
    # Refresh after a tenth of 10 s: the plan's timing is tested at fixed times
    # in test_refresh.py; here only the driver's round trip matters.
    refresher = Refresher(a.client, RefreshConfig(refresh_fraction=0.1))
    refresher.add(rdv.point_id, "app", 10, granted)
    rdv.clock.now += 5
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(refresher.run())
        async with asyncio.timeout(10):
            async with refresher.changed:
                await refresher.changed.wait_for(lambda: refresher.refreshed >= 1)
        task.cancel()
    again = rdv.server.registry.get("app", a.host.peer_id)
    assert again is not None and again.expires == first.expires + 5
    assert again.seq > first.seq


async def test_a_point_without_the_protocol_is_a_negotiation_error(rdv: RendezvousNet) -> None:
    a, b = await rdv.make_peer(), await rdv.make_peer()
    await a.host.connect(f"{b.host.listen_addrs()[0]}/p2p/{b.host.peer_id}")
    with pytest.raises(ProtocolNotSupported):
        await a.client.discover(b.host.peer_id, "app")
