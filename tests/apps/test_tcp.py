"""overlay/apps/tcp.py: the listener's accepted sockets, the bytes a
client sent before its handler asked, and the exposer's loopback connect."""

from __future__ import annotations

import asyncio
import socket

import pytest

from overlay.apps.tcp import Accepted, ConnectionGroup, connect_tcp


async def test_take_sent_returns_what_the_client_already_sent() -> None:
    ours, theirs = socket.socketpair()
    with theirs:
        ours.setblocking(False)
        conn = Accepted(ours)
        assert conn.take_sent() == b""  # nothing yet, and no waiting
        theirs.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert conn.take_sent() == b"GET / HTTP/1.0\r\n\r\n"
        reader, writer = await conn.streams()
        theirs.sendall(b"more")
        assert await reader.readexactly(4) == b"more"  # nothing lost between the two
        writer.write(b"answer")
        await writer.drain()
        assert theirs.recv(16) == b"answer"
        await conn.aclose()
        assert theirs.recv(16) == b""


async def test_a_listener_serves_each_connection_and_stops_when_closed() -> None:
    served: list[bytes] = []

    async def echo(conn: Accepted) -> None:
        reader, writer = await conn.streams()
        data = await reader.readexactly(5)
        served.append(data)
        writer.write(data.upper())
        await writer.drain()

    async with ConnectionGroup() as group:
        listener = await group.listen("127.0.0.1", 0, echo, "test echo")
        host, port = listener.address
        for word in (b"hello", b"there"):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(word)
            assert await reader.readexactly(5) == word.upper()
            writer.close()
            await writer.wait_closed()
        assert served == [b"hello", b"there"]
        await group.close_listener(listener)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(host, port)


async def test_connections_beyond_the_cap_are_closed_at_once() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def hold(conn: Accepted) -> None:
        entered.set()
        await release.wait()

    async with ConnectionGroup(max_connections=1) as group:
        listener = await group.listen("127.0.0.1", 0, hold, "test hold")
        first = await asyncio.open_connection(*listener.address)
        await entered.wait()
        assert group.open_connections == 1
        reader, writer = await asyncio.open_connection(*listener.address)
        try:
            assert await reader.read(1) == b""
        except ConnectionResetError:
            pass  # closed with our bytes unread: the kernel says reset
        assert group.refused == 1
        writer.close()
        release.set()
        first[1].close()


async def test_connect_tcp_on_loopback_completes_without_yielding() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    with server:
        coro = connect_tcp("127.0.0.1", server.getsockname()[1])
        # The kernel finishes a loopback handshake inside connect(): the
        # coroutine ends at its first step, so the exposer's status byte
        # leaves in the same loop turn as the negotiation's answer.
        with pytest.raises(StopIteration) as done:
            coro.send(None)
        sock: socket.socket = done.value.value
        with sock:
            accepted, _ = server.accept()
            with accepted:
                sock.send(b"ping")
                assert accepted.recv(4) == b"ping"


async def test_connect_tcp_to_a_closed_port_is_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ConnectionRefusedError):
            await connect_tcp("127.0.0.1", port)
