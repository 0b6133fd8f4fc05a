"""Host logic over the in-memory transport: handlers, limits, merging."""

from __future__ import annotations

import asyncio

import pytest

from overlay import AGENT_VERSION
from overlay.errors import (
    LimitExceeded,
    ProtocolNotSupported,
    RemoteProtocolError,
    StreamClosed,
    StreamReset,
)
from overlay.host import (
    IDENTIFY_PROTOCOL,
    IDENTIFY_PUSH_PROTOCOL,
    PING_PROTOCOL,
    HostConfig,
    NegotiatedStream,
)


def _dial_addr(host) -> str:  # type: ignore[no-untyped-def]
    return f"{host.listen_addrs()[0]}/p2p/{host.peer_id}"


async def test_connect_ping_identify(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, ra = await memory_hosts()
    b, rb = await memory_hosts()
    async with asyncio.timeout(5):
        conn = await a.connect(_dial_addr(b))
        assert conn.remote_peer == b.peer_id
        rtt = await a.ping(b.peer_id)
        assert 0 <= rtt < 5
        # Both sides identify automatically.
        await ra.wait_for(lambda: bool(ra.identified_by(b.peer_id)))
        await rb.wait_for(lambda: bool(rb.identified_by(a.peer_id)))
    info = ra.identified_by(b.peer_id)[0]
    assert info.agent_version == AGENT_VERSION
    assert {PING_PROTOCOL, IDENTIFY_PROTOCOL, IDENTIFY_PUSH_PROTOCOL} <= set(info.protocols)
    assert list(info.listen_addrs) == b.listen_addrs()
    assert info.record_seq is not None
    assert a.peerstore.supports(b.peer_id, PING_PROTOCOL)
    assert b.peerstore.get(a.peer_id).agent_version == AGENT_VERSION  # type: ignore[union-attr]
    assert ra.connected == [b.peer_id] and rb.connected == [a.peer_id]
    assert a.peers() == [b.peer_id] and b.peers() == [a.peer_id]


async def test_connection_is_reused(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await memory_hosts()
    b, _ = await memory_hosts()
    async with asyncio.timeout(5):
        first = await a.connect(_dial_addr(b))
        second = await a.connect(_dial_addr(b))
        # Without /p2p the address identifies the same connection.
        third = await a.connect(str(b.listen_addrs()[0]))
        stream = await a.new_stream(b.peer_id, [PING_PROTOCOL])
    assert first is second is third is stream.conn
    assert memory_hosts.net.dials == 1
    assert len(a.connections()) == 1
    stream.reset()


async def test_simultaneous_dials_merge(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await memory_hosts()
    b, _ = await memory_hosts()
    gate = asyncio.Event()
    endpoint = a.endpoints()[0]
    endpoint.dial_gate = gate
    async with asyncio.timeout(5):
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(a.connect(_dial_addr(b))) for _ in range(5)]
            # The other four connect() calls joined before this wakes up.
            await endpoint.dial_started.wait()
            gate.set()
    conns = {id(t.result()) for t in tasks}
    assert len(conns) == 1
    assert memory_hosts.net.dials == 1


async def test_unknown_protocol_then_host_still_serves(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await memory_hosts()
    b, _ = await memory_hosts()
    async with asyncio.timeout(5):
        await a.connect(_dial_addr(b))
        with pytest.raises(ProtocolNotSupported):
            await a.new_stream(b.peer_id, ["/nope/1.0.0", "/nope/2.0.0"])
        assert await a.ping(b.peer_id) >= 0


async def test_failing_handler_resets_only_its_stream(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await memory_hosts()
    b, _ = await memory_hosts()
    calls = 0

    async def bad(stream: NegotiatedStream) -> None:
        nonlocal calls
        calls += 1
        await stream.readexactly(1)
        raise RemoteProtocolError("peer sent nonsense")

    async def crash(stream: NegotiatedStream) -> None:
        await stream.readexactly(1)
        raise ZeroDivisionError("bug in a handler")

    b.set_stream_handler("/bad/1", bad)
    b.set_stream_handler("/crash/1", crash)
    async with asyncio.timeout(5):
        await a.connect(_dial_addr(b))
        stream = await a.new_stream(b.peer_id, ["/bad/1"])
        stream.write(b"x")
        with pytest.raises(StreamReset):
            await stream.read()
        crashed = await a.new_stream(b.peer_id, ["/crash/1"])
        crashed.write(b"y")
        with pytest.raises(StreamReset):
            await crashed.read()
        assert await a.ping(b.peer_id) >= 0
    assert calls == 1
    assert b.peers() == [a.peer_id]


async def test_custom_handler_echo_and_lazy(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await memory_hosts()
    b, _ = await memory_hosts()

    async def echo(stream: NegotiatedStream) -> None:
        data = await stream.read()
        stream.write(data[::-1])
        await stream.close()

    b.set_stream_handler("/echo/1", echo)
    async with asyncio.timeout(5):
        await a.connect(_dial_addr(b))
        stream = await a.new_stream(b.peer_id, ["/echo/1"], lazy=True)
        stream.write(b"abc")
        assert await stream.readexactly(3) == b"cba"
        assert stream.protocol == "/echo/1" and stream.remote_peer == b.peer_id
        lazy_bad = await a.new_stream(b.peer_id, ["/missing/1"], lazy=True)
        with pytest.raises(ProtocolNotSupported):
            await lazy_bad.read()


async def test_connection_limit_refuses_newest(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await memory_hosts(HostConfig(max_connections=1))
    b, _ = await memory_hosts()
    c, _ = await memory_hosts()
    async with asyncio.timeout(5):
        await a.connect(_dial_addr(b))
        with pytest.raises(LimitExceeded):
            await a.connect(_dial_addr(c))
        # Inbound beyond the cap is closed by a, repeatedly; b's connection survives.
        for _ in range(3):
            conn = await c.connect(_dial_addr(a))
            await conn.wait_closed()
        assert a.peers() == [b.peer_id]
        assert await a.ping(b.peer_id) >= 0


async def test_disconnect_is_noticed(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, ra = await memory_hosts()
    b, rb = await memory_hosts()
    async with asyncio.timeout(5):
        conn = await a.connect(_dial_addr(b))
        await rb.wait_for(lambda: rb.connected == [a.peer_id])
        conn.close()
        await ra.wait_for(lambda: ra.disconnected == [b.peer_id])
        await rb.wait_for(lambda: rb.disconnected == [a.peer_id])
    assert a.peers() == [] and b.peers() == []
    # The peerstore remembers b's address, so a can reconnect by ID.
    async with asyncio.timeout(5):
        assert await a.ping(b.peer_id) >= 0


async def test_identify_push_on_new_protocol(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, ra = await memory_hosts()
    b, rb = await memory_hosts()
    async with asyncio.timeout(5):
        await a.connect(_dial_addr(b))
        await ra.wait_for(lambda: bool(ra.identified_by(b.peer_id)))
        await rb.wait_for(lambda: bool(rb.identified_by(a.peer_id)))

        async def noop(stream: NegotiatedStream) -> None:
            await stream.close()

        b.set_stream_handler("/new/1.0.0", noop)
        await ra.wait_for(lambda: a.peerstore.supports(b.peer_id, "/new/1.0.0"))
        b.remove_stream_handler("/new/1.0.0")
        await ra.wait_for(lambda: not a.peerstore.supports(b.peer_id, "/new/1.0.0"))


async def test_inbound_ping_streams_are_capped(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    a, _ = await memory_hosts()
    b, _ = await memory_hosts()
    async with asyncio.timeout(5):
        await a.connect(_dial_addr(b))
        streams = [await a.new_stream(b.peer_id, [PING_PROTOCOL], lazy=True) for _ in range(3)]
        for s in streams[:2]:
            s.write(bytes(32))
            assert await s.readexactly(32) == bytes(32)
        with pytest.raises((StreamReset, StreamClosed)):
            streams[2].write(bytes(32))
            await streams[2].readexactly(32)
        for s in streams[:2]:
            s.reset()


async def test_hostile_oversized_identify_push(memory_hosts) -> None:  # type: ignore[no-untyped-def]
    from overlay.wire import encode_uvarint

    a, ra = await memory_hosts()
    b, rb = await memory_hosts()
    async with asyncio.timeout(5):
        await a.connect(_dial_addr(b))
        await rb.wait_for(lambda: bool(rb.identified_by(a.peer_id)))
        before = len(rb.identified)
        stream = await a.new_stream(b.peer_id, [IDENTIFY_PUSH_PROTOCOL])
        stream.write(encode_uvarint(1 << 40))
        with pytest.raises(StreamReset):
            await stream.read()
        assert len(rb.identified) == before
        assert await a.ping(b.peer_id) >= 0


async def test_host_must_be_running() -> None:
    from overlay.errors import LocalProtocolError
    from overlay.host import Host
    from overlay.identity import Ed25519PrivateKey

    from tests.host.memnet import MemoryNetwork

    key = Ed25519PrivateKey.generate()
    net = MemoryNetwork()
    host = Host(key, endpoint_factory=net.factory(key))
    with pytest.raises(LocalProtocolError):
        await host.listen(["/ip4/127.0.0.1/udp/0/quic-v1"])
    with pytest.raises(LocalProtocolError):
        await host.connect("/ip4/127.0.0.1/udp/1/quic-v1")
    assert net.endpoints == {}
    async with host:
        pass
    with pytest.raises(LocalProtocolError):
        async with host:
            pass
