"""Noise + yamux over TCP against py-libp2p (marker ``interop``).

Our side speaks plain asyncio TCP and upgrades it with ``overlay.secure``
(multistream ``/noise``, the Noise XX handshake, multistream
``/yamux/1.0.0``); py-libp2p (``pylibp2p_tcp_peer.py``, Noise as its only
security) is the other end.  Both directions run ``/ipfs/ping/1.0.0`` over a
yamux stream, and a dial under the wrong peer ID fails with PeerIdMismatch.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from overlay.errors import OverlayError, PeerIdMismatch
from overlay.identity import (
    Ed25519PrivateKey,
    PeerId,
    PrivateKey,
    RsaPrivateKey,
    Secp256k1PrivateKey,
)
from overlay.mux import YamuxSession, YamuxStream
from overlay.negotiate import handle_protocol, select_protocol
from overlay.secure import upgrade_inbound, upgrade_outbound

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.secure.tcp import TcpStream  # noqa: E402

pytestmark = pytest.mark.interop

PEER_SCRIPT = Path(__file__).resolve().parent / "pylibp2p_tcp_peer.py"
PING = "/ipfs/ping/1.0.0"
TIMEOUT = 30.0


@asynccontextmanager
async def pylibp2p(python: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        python,
        str(PEER_SCRIPT),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def read_json(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    assert line, "py-libp2p peer exited without answering"
    result: dict[str, Any] = json.loads(line)
    return result


async def command(proc: asyncio.subprocess.Process, cmd: str) -> dict[str, Any]:
    assert proc.stdin is not None
    proc.stdin.write(cmd.encode() + b"\n")
    await proc.stdin.drain()
    return await read_json(proc)


async def serve_ping(stream: YamuxStream, served: list[int]) -> None:
    """Answer ping on streams py-libp2p opens; refuse anything else (identify)."""
    try:
        await handle_protocol(stream, lambda p: p == PING)
        while data := await stream.read(32):
            served.append(len(data))
            stream.write(data)
            await stream.drain()
        await stream.close()
    except OverlayError:
        stream.reset()


async def accept_loop(session: YamuxSession, served: list[int]) -> None:
    async with asyncio.TaskGroup() as tg:
        while True:
            try:
                stream = await session.accept_stream()
            except OverlayError:
                return
            tg.create_task(serve_ping(stream, served))


async def ping(session: YamuxSession, times: int) -> None:
    stream = await session.open_stream()
    await select_protocol(stream, [PING])
    for _ in range(times):
        payload = os.urandom(32)
        stream.write(payload)
        await stream.drain()
        assert await stream.readexactly(32) == payload
    await stream.close()


def tcp_port(addr: str) -> int:
    parts = addr.split("/")
    assert parts[1] == "ip4" and parts[3] == "tcp", addr
    return int(parts[4])


# No ECDSA: py-libp2p 0.8.1 has no deserializer for key type 3 and drops
# the connection (our ECDSA keys are covered by tests/secure).
KEY_MAKERS: dict[str, Callable[[], PrivateKey]] = {
    "ed25519": Ed25519PrivateKey.generate,
    "secp256k1": Secp256k1PrivateKey.generate,
    "rsa": RsaPrivateKey.generate,
}


@pytest.mark.parametrize("key_type", list(KEY_MAKERS))
async def test_we_dial_pylibp2p_over_noise_and_yamux(pylibp2p_python: str, key_type: str) -> None:
    """py-libp2p verifies our identity key of each type in the Noise payload."""
    key = KEY_MAKERS[key_type]()
    async with asyncio.timeout(TIMEOUT), pylibp2p(pylibp2p_python, "listen") as proc:
        info = await read_json(proc)
        their_peer = PeerId.from_string(info["peer_id"])
        raw = await TcpStream.connect("127.0.0.1", tcp_port(info["addrs"][0]))
        try:
            up = await upgrade_outbound(raw, key, their_peer, YamuxSession)
            assert up.remote_peer == their_peer and up.muxer_protocol == "/yamux/1.0.0"
            async with up.muxer as session, asyncio.TaskGroup() as tg:
                acceptor = tg.create_task(accept_loop(session, []))
                await ping(session, 3)
                peers = await command(proc, "peers")
                # py-libp2p's Noise proved our identity to it, too.
                assert peers["peers"] == [str(PeerId.from_public_key(key.public_key()))]
                acceptor.cancel()
        finally:
            await raw.aclose()


async def test_pylibp2p_dials_us_over_noise_and_yamux(pylibp2p_python: str) -> None:
    key = Ed25519PrivateKey.generate()
    our_peer = PeerId.from_public_key(key.public_key())
    upgraded: asyncio.Queue[PeerId] = asyncio.Queue()
    served: list[int] = []
    ended = asyncio.Event()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = TcpStream(reader, writer)
        try:
            up = await upgrade_inbound(raw, key, YamuxSession)
            await upgraded.put(up.remote_peer)
            async with up.muxer as session:
                await accept_loop(session, served)
        finally:
            await raw.aclose()
            ended.set()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(TIMEOUT):
            addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{our_peer}"
            async with pylibp2p(pylibp2p_python, "dial", addr, "--pings", "3") as proc:
                result = await read_json(proc)
                assert "error" not in result, result
                assert result["peer_id"] == str(our_peer)
                assert len(result["ping_rtts_ms"]) == 3
                # The peer we verified is the one py-libp2p says it is.
                assert str(await upgraded.get()) == result["local_peer_id"]
            # py-libp2p is gone; our session ends with its connection.
            await ended.wait()
            assert sum(served) == 3 * 32
    finally:
        server.close()
        await server.wait_closed()


async def test_dial_under_the_wrong_peer_id_fails(pylibp2p_python: str) -> None:
    key = Ed25519PrivateKey.generate()
    wrong = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    async with asyncio.timeout(TIMEOUT), pylibp2p(pylibp2p_python, "listen") as proc:
        info = await read_json(proc)
        raw = await TcpStream.connect("127.0.0.1", tcp_port(info["addrs"][0]))
        try:
            with pytest.raises(PeerIdMismatch) as exc_info:
                await upgrade_outbound(raw, key, wrong, YamuxSession)
            assert exc_info.value.actual == info["peer_id"]
            assert (await command(proc, "peers"))["peers"] == []
        finally:
            await raw.aclose()
