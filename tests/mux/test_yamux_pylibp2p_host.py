"""The whole TCP stack against a py-libp2p host: multistream, /noise, then
our yamux; twenty echo streams each way.  Needs the py-libp2p venv of
``interop/setup.sh`` (see ``test_yamux_pylibp2p``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from overlay.errors import NegotiationError, StreamReset
from overlay.identity.ed25519_keys import Ed25519PrivateKey
from overlay.identity.peer_id import PeerId
from overlay.mux import PROTOCOL_ID as YAMUX, YamuxSession, YamuxStream
from overlay.negotiate import handle_protocol, select_protocol
from overlay.secure import upgrade_inbound, upgrade_outbound

from .tcp import TcpByteStream
from .test_yamux_pylibp2p import pylibp2p_python  # noqa: F401  (fixture)

pytestmark = pytest.mark.interop

HOST = Path(__file__).resolve().parent / "pylibp2p_echo_host.py"
ECHO = "/overlay-test/echo/1.0.0"
STREAMS = 20
SIZE = 300_000  # above the 256 KiB window


def payload(i: int) -> bytes:
    seed = hashlib.sha256(i.to_bytes(4, "big")).digest()
    n = SIZE + 1000 * i
    return (seed * (n // len(seed) + 1))[:n]


async def read_all(stream: YamuxStream) -> bytes:
    parts = []
    while chunk := await stream.read():
        parts.append(chunk)
    return b"".join(parts)


async def refuse_streams(session: YamuxSession) -> None:
    """Reset what the host opens to us (its identify), so it gives up at
    once instead of waiting for an answer."""
    while True:
        (await session.accept_stream()).reset()


@asynccontextmanager
async def host(python: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        python,
        str(HOST),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def line(proc: asyncio.subprocess.Process) -> dict[str, object]:
    assert proc.stdout is not None and proc.stderr is not None
    raw = await proc.stdout.readline()
    if not raw:
        err = await proc.stderr.read()
        pytest.fail(f"py-libp2p host said nothing; stderr:\n{err.decode()[-3000:]}")
    result: dict[str, object] = json.loads(raw)
    return result


async def test_twenty_streams_to_a_pylibp2p_host(pylibp2p_python: str) -> None:  # noqa: F811
    key = Ed25519PrivateKey.generate()
    async with asyncio.timeout(90), host(pylibp2p_python, "listen") as proc:
        hello = await line(proc)
        addr = str(hello["addrs"][0])  # type: ignore[index]
        port = int(addr.split("/")[4])
        remote = PeerId.from_string(str(hello["peer_id"]))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        tcp = TcpByteStream(reader, writer)
        try:
            upgraded = await upgrade_outbound(tcp, key, remote, YamuxSession)
            assert upgraded.muxer_protocol == YAMUX

            async def one(session: YamuxSession, i: int) -> None:
                stream = await session.open_stream()
                await select_protocol(stream, [ECHO])
                data = payload(i)
                async with asyncio.TaskGroup() as tg:
                    echoed = tg.create_task(read_all(stream))
                    for j in range(0, len(data), 64_000):
                        stream.write(data[j : j + 64_000])
                        await stream.drain()
                    await stream.close()
                assert echoed.result() == data, f"stream {i}"

            async with upgraded.muxer as session:
                async with asyncio.TaskGroup() as tg:
                    refusing = tg.create_task(refuse_streams(session))
                    async with asyncio.TaskGroup() as streams:
                        for i in range(STREAMS):
                            streams.create_task(one(session, i))
                    assert 0 <= await session.ping() < 5
                    refusing.cancel()
        finally:
            await tcp.aclose()
        assert proc.stdin is not None
        proc.stdin.close()
        assert await line(proc) == {"echoed": STREAMS, "errors": []}


async def test_a_pylibp2p_host_opens_twenty_streams_to_us(pylibp2p_python: str) -> None:  # noqa: F811
    key = Ed25519PrivateKey.generate()
    me = PeerId.from_public_key(key.public_key())
    connections: asyncio.Queue[TcpByteStream] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await connections.put(TcpByteStream(reader, writer))

    echoed = 0
    all_echoed = asyncio.Event()

    async def serve(stream: YamuxStream) -> None:
        nonlocal echoed
        try:
            await handle_protocol(stream, lambda p: p == ECHO)
        except (NegotiationError, StreamReset):
            return  # its identify, which we do not serve
        while chunk := await stream.read():
            stream.write(chunk)
            await stream.drain()
        await stream.close()
        echoed += 1
        if echoed == STREAMS:
            all_echoed.set()

    async def accept_all(session: YamuxSession) -> None:
        async with asyncio.TaskGroup() as tg:
            while not all_echoed.is_set():
                tg.create_task(serve(await session.accept_stream()))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{me}"
    try:
        async with asyncio.timeout(90), host(
            pylibp2p_python, "dial", addr, str(STREAMS), str(SIZE)
        ) as proc:
            tcp = await connections.get()
            try:
                upgraded = await upgrade_inbound(tcp, key, YamuxSession)
                async with upgraded.muxer as session:
                    async with asyncio.TaskGroup() as tg:
                        accepting = tg.create_task(accept_all(session))
                        assert await line(proc) == {"ok": STREAMS, "errors": []}
                        await all_echoed.wait()
                        accepting.cancel()
            finally:
                await tcp.aclose()
    finally:
        server.close()
        await server.wait_closed()
