"""Allowlists, half-close, a client that never reads (the stream window
holds the sender), persistence of exposures, over real daemons."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


from overlay.daemon.config import load_config
from tests.apps.helpers import curl, network


@asynccontextmanager
async def tcp_service(handler: object) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _counting_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads to EOF, then answers how many bytes came: needs half-close."""
    total = 0
    while data := await reader.read(65536):
        total += len(data)
    writer.write(f"got {total}\n".encode())
    await writer.drain()
    writer.close()


async def _socks_connect(proxy: str, host: str, port: int, rcvbuf: int | None = None,
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    phost, pport = proxy.rsplit(":", 1)
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (phost, int(pport)))
    reader, writer = await asyncio.open_connection(sock=sock)
    raw = host.encode()
    writer.write(b"\x05\x01\x00" + b"\x05\x01\x00\x03" + bytes((len(raw),)) + raw
                 + port.to_bytes(2, "big"))
    assert await reader.readexactly(2) == b"\x05\x00"
    reply = await reader.readexactly(10)
    assert reply[1] == 0, reply
    return reader, writer


async def test_allowlist_half_close_and_persistence(short_tmp: Path) -> None:
    async with tcp_service(_counting_reply) as port, asyncio.timeout(120), \
            network(short_tmp) as (a, b):
        await a.call("name_register", {"name": "alice.ovl"})
        await b.call("name_register", {"name": "bob.ovl"})
        # a caches bob.ovl's record before the service exists: the proxy must
        # look again rather than call the port unexposed.
        cached = await a.call("name_resolve", {"name": "bob.ovl"})
        assert cached["record"]["services"] == []
        await b.call("expose_add", {"service": "count", "port": port,
                                    "allow": ["carol.ovl"]})
        # In config.toml for the next start.
        services = load_config(b.daemon.home.config_file).services
        assert services == {"count": {"port": port, "allow": ["carol.ovl"]}}

        # carol.ovl does not exist, so a is not allowed: 403 with the reason.
        status, out, _ = await curl("-x", f"http://{a.proxy}", "-w", "%{http_code}",
                                    f"http://bob.ovl:{port}/")
        assert out.endswith(b"403") and b"not in the allowlist of 'count'" in out

        # Allowed by name: alice.ovl resolves to a's peer ID.
        await b.call("expose_add", {"service": "count", "port": port,
                                    "allow": ["alice.ovl"]})
        fwd = await a.call("forward_add", {"listen": "127.0.0.1:0",
                                           "target": "bob.ovl:count"})
        host, fport = fwd["listen"].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(fport))
        writer.write(b"x" * 300_000)
        writer.write_eof()  # half-close crosses the forward, the stream and the exposer
        assert await reader.read() == b"got 300000\n"
        writer.close()
        await writer.wait_closed()
        listed = await b.call("expose_list")
        assert listed["services"][0]["bytes_in"] == 300_000
        assert listed["refused"] == {"refused": 1}


async def test_a_client_that_never_reads_holds_the_sender(short_tmp: Path) -> None:
    written = 0
    blocked = asyncio.Event()
    ended = asyncio.Event()

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        chunk = bytes(65536)
        try:
            for _ in range(4000):  # 250 MiB if nothing held it back
                writer.write(chunk)
                try:
                    async with asyncio.timeout(2.0):
                        await writer.drain()
                except TimeoutError:
                    blocked.set()  # held back for 2 s: the window is closed
                    await writer.drain()
                written += len(chunk)
        except ConnectionError:
            pass
        finally:
            ended.set()
            writer.transport.abort()

    async with tcp_service(firehose) as port, asyncio.timeout(120), \
            network(short_tmp) as (a, b):
        await b.call("name_register", {"name": "bob.ovl"})
        await b.call("expose_add", {"service": "hose", "port": port})
        reader, writer = await _socks_connect(a.proxy, "bob.ovl", port, rcvbuf=65536)
        await blocked.wait()
        held = written
        # Bounded by socket buffers and the stream windows, not by the 250 MiB on offer.
        assert held < 32 * 1024 * 1024, held
        assert not ended.is_set()
        # The client hangs up: the reset reaches the service, which ends.
        writer.transport.abort()
        await ended.wait()
        assert written < 250 * 1024 * 1024


async def test_a_service_that_never_reads_holds_the_uploader(short_tmp: Path) -> None:
    accepted = asyncio.Event()
    release = asyncio.Event()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        accepted.set()
        await release.wait()  # never reads until the test is done
        writer.transport.abort()

    async with tcp_service(deaf) as port, asyncio.timeout(120), network(short_tmp) as (a, b):
        await b.call("name_register", {"name": "bob.ovl"})
        await b.call("expose_add", {"service": "deaf", "port": port})
        fwd = await a.call("forward_add", {"listen": "127.0.0.1:0", "target": "bob.ovl:deaf"})
        host, fport = fwd["listen"].rsplit(":", 1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(fport)))
        reader, writer = await asyncio.open_connection(sock=sock)
        sent = 0
        chunk = bytes(65536)
        try:
            while sent < 250 * 1024 * 1024:
                writer.write(chunk)
                try:
                    async with asyncio.timeout(2.0):
                        await writer.drain()
                except TimeoutError:
                    break  # held back for 2 s: the service's window is closed
                sent += len(chunk)
            assert accepted.is_set()
            assert sent < 32 * 1024 * 1024, sent
        finally:
            release.set()
            writer.transport.abort()
