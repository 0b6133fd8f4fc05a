"""The exposer with an opener that sends everything in one write (the
protocol proposal, the service header and its first bytes, as a forward
does): the bytes reach the local service once OK is sent, and never reach
it when the service refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from overlay.apps.config import Exposure
from overlay.apps.exposer import Exposer
from overlay.apps.service_proto import SERVICE_PROTOCOL, Status, encode_header
from overlay.host.host import Host
from overlay.host.stream import NegotiatedStream
from overlay.identity import Ed25519PrivateKey, PeerId


async def _no_names(name: str) -> tuple[str, ...]:
    return ()


@pytest.fixture
async def hosts() -> AsyncIterator[tuple[Host, Host, Exposer]]:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
        b = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
        await b.listen(["/ip4/127.0.0.1/udp/0/quic-v1"])
        a.peerstore.add_addrs(b.peer_id, b.listen_addrs())
        exposer = Exposer(_no_names)
        b.set_stream_handler(SERVICE_PROTOCOL, exposer.handle)
        yield a, b, exposer


async def _open_pipelined(a: Host, b: Host, service: str, data: bytes) -> NegotiatedStream:
    stream = await a.new_stream(b.peer_id, [SERVICE_PROTOCOL], lazy=True)
    stream.write(encode_header(service) + data)  # no round trip waited for
    return stream


async def test_pipelined_bytes_reach_the_service_and_its_answer_comes_back(
        hosts: tuple[Host, Host, Exposer]) -> None:
    a, b, exposer = hosts
    received: list[bytes] = []

    async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(100)  # EOF follows the request: read to it
        while more := await reader.read(100):
            data += more
        received.append(data)
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upper, "127.0.0.1", 0)
    async with server, asyncio.timeout(30):
        exposer.set(Exposure("web", server.sockets[0].getsockname()[1]))
        stream = await _open_pipelined(a, b, "web", b"get /index")
        stream.write_eof()
        assert await stream.readexactly(1) == bytes((Status.OK,))
        answer = b""
        while chunk := await stream.read():
            answer += chunk
        assert answer == b"GET /INDEX"
        assert received == [b"get /index"]
        assert exposer.counters["web"].down == len(b"get /index")


async def test_a_refusing_service_never_sees_the_pipelined_bytes(
        hosts: tuple[Host, Host, Exposer]) -> None:
    a, b, exposer = hosts
    connections = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    async with server, asyncio.timeout(30):
        port = server.sockets[0].getsockname()[1]
        someone_else = str(PeerId.from_public_key(Ed25519PrivateKey.generate().public_key()))
        exposer.set(Exposure("ssh", port, allow=(someone_else,)))
        stream = await _open_pipelined(a, b, "ssh", b"secret first bytes")
        assert await stream.readexactly(1) == bytes((Status.REFUSED,))
        assert await stream.read() == b""  # closed after the refusal
        stream = await _open_pipelined(a, b, "nothing-here", b"more bytes")
        assert await stream.readexactly(1) == bytes((Status.NOT_EXPOSED,))
        # A service that does answer, so that a connection made for the
        # refused streams would have been counted by now.
        exposer.set(Exposure("open", port))
        stream = await _open_pipelined(a, b, "open", b"")
        assert await stream.readexactly(1) == bytes((Status.OK,))
        assert await stream.read() == b""  # count() closed it
        assert connections == 1
        assert exposer.refused == {"refused": 1, "not_exposed": 1}
