"""Our yamux against py-libp2p's yamux over plain loopback TCP (no security
layer, so only the muxers meet).  Needs the py-libp2p venv of
``interop/setup.sh``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from overlay.mux import YamuxSession, YamuxStream

from .tcp import TcpByteStream

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
PEER = HERE / "pylibp2p_yamux_peer.py"
SETUP = HERE.parent.parent / "interop" / "setup.sh"
STREAMS = 20
SIZE = 300_000  # above the 256 KiB window: window updates must flow both ways
OFFLINE = ("Temporary failure in name resolution", "Network is unreachable", "NewConnectionError")


@pytest.fixture(scope="module")
def pylibp2p_python() -> str:
    proc = subprocess.run(
        ["bash", str(SETUP)], capture_output=True, text=True, timeout=900, check=False
    )
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if any(marker in output for marker in OFFLINE):
            pytest.skip("py-libp2p cannot be installed: no network")
        pytest.fail(f"interop/setup.sh failed:\n{output[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def payload(i: int) -> bytes:
    seed = hashlib.sha256(i.to_bytes(4, "big")).digest()
    n = SIZE + 1000 * i
    return (seed * (n // len(seed) + 1))[:n]


async def read_all(stream: YamuxStream) -> bytes:
    parts = []
    while chunk := await stream.read():
        parts.append(chunk)
    return b"".join(parts)


@asynccontextmanager
async def spawn(python: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        python, str(PEER), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
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
        pytest.fail(f"py-libp2p peer said nothing; stderr:\n{err.decode()[-3000:]}")
    result: dict[str, object] = json.loads(raw)
    return result


async def test_we_open_twenty_streams_to_pylibp2p(pylibp2p_python: str) -> None:
    async with asyncio.timeout(90):
        async with spawn(pylibp2p_python, "listen") as proc:
            port = (await line(proc))["port"]
            assert isinstance(port, int)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            tcp = TcpByteStream(reader, writer)

            async def one(session: YamuxSession, i: int) -> None:
                stream = await session.open_stream()
                data = payload(i)
                async with asyncio.TaskGroup() as tg:
                    echoed = tg.create_task(read_all(stream))
                    for j in range(0, len(data), 64_000):
                        stream.write(data[j : j + 64_000])
                        await stream.drain()
                    await stream.close()
                assert echoed.result() == data, f"stream {i}"

            try:
                async with YamuxSession(tcp, is_client=True) as session:
                    async with asyncio.TaskGroup() as tg:
                        for i in range(STREAMS):
                            tg.create_task(one(session, i))
                    assert 0 <= await session.ping() < 5  # py-libp2p echoes our ping
            finally:
                await tcp.aclose()
            result = await line(proc)
            assert result == {"echoed": STREAMS, "errors": []}


async def test_pylibp2p_opens_twenty_streams_to_us(pylibp2p_python: str) -> None:
    connected: asyncio.Queue[TcpByteStream] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await connected.put(TcpByteStream(reader, writer))

    async def echo(stream: YamuxStream) -> None:
        while chunk := await stream.read():
            stream.write(chunk)
            await stream.drain()
        await stream.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(90):
            async with spawn(
                pylibp2p_python, "dial", str(port), str(STREAMS), str(SIZE)
            ) as proc:
                tcp = await connected.get()
                try:
                    async with YamuxSession(tcp, is_client=False) as session:
                        async with asyncio.TaskGroup() as tg:
                            for _ in range(STREAMS):
                                tg.create_task(echo(await session.accept_stream()))
                        result = await line(proc)
                        assert result == {"ok": STREAMS, "errors": []}
                finally:
                    await tcp.aclose()
    finally:
        server.close()
        await server.wait_closed()
