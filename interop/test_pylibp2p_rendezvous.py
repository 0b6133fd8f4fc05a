"""Rendezvous (``/rendezvous/1.0.0``) against py-libp2p 0.8 over QUIC-v1 on
loopback, in both roles.

py-libp2p 0.8.1 implements the draft that go-libp2p-rendezvous started
from: its ``Register`` carries ``PeerInfo {id, addrs}`` at field 2 where
the spec (and overlay) carry a signed peer record (the same field number
and wire type, different contents).  Everything else matches: message
types, the Discover/DiscoverResponse fields, status codes, uvarint framing,
cookies as opaque bytes, several requests per stream.  So these tests pin
what works and how each side refuses what does not, never crashing:

- our client at a py-libp2p point: DISCOVER works; its unsigned
  registrations are dropped as unverifiable (``DiscoveryPage.rejected``);
  our REGISTER is refused with E_NOT_AUTHORIZED (it reads our envelope's
  public key as a peer ID that is not ours);
- a py-libp2p client at our point: DISCOVER works and its REGISTER is
  refused with E_INVALID_SIGNED_PEER_RECORD (101, which py-libp2p calls
  E_INVALID_PEER_INFO); our point keeps serving.

The py-libp2p side is a small script written next to the test's temporary
files; it reuses ``pylibp2p_peer.py``'s host and JSON-line helpers.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from multiaddr import Multiaddr

from overlay.host import Host
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.rendezvous import (
    RegistryConfig,
    RendezvousClient,
    RendezvousRefused,
    RendezvousServer,
    ServerConfig,
    Status,
)

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"
START_TIMEOUT = 60.0
STEP_TIMEOUT = 40.0
TEST_TIMEOUT = 150.0

PEER_SCRIPT = r'''
import sys

sys.path.insert(0, sys.argv[1])

import os
import traceback

import multiaddr
import trio
from libp2p.discovery.rendezvous import RendezvousClient, RendezvousError, RendezvousService
from libp2p.discovery.rendezvous.service import RegistrationRecord
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr.protocols import P_P2P

from pylibp2p_peer import LISTEN_ADDR, emit, fix_eof_race, host_summary, make_host, stdin_commands


async def handle(host, service, cmd):
    verb, _, rest = cmd.partition(" ")
    args = rest.split()
    if verb == "connect":
        info = info_from_p2p_addr(multiaddr.Multiaddr(args[0]))
        await host.connect(info)
        return {"connected": info.peer_id.to_base58()}
    if verb == "seed":  # a registration of this node at its own point
        addrs = [a.decapsulate_code(P_P2P).to_bytes() for a in host.get_addrs()]
        service.registrations.setdefault(args[0], {})[host.get_id()] = RegistrationRecord(
            host.get_id(), addrs, args[0], 7200)
        return {"seeded": args[0]}
    if verb == "registered":
        return {"peers": [p.to_base58() for p in service.registrations.get(args[0], {})]}
    client = RendezvousClient(host, ID.from_base58(args[0]))
    try:
        if verb == "register":
            return {"ttl": await client.register(args[1], 7200)}
        if verb == "discover":
            peers, cookie = await client.discover(args[1], 100)
            return {"peers": [p.peer_id.to_base58() for p in peers], "cookie": cookie.hex()}
    except RendezvousError as exc:
        return {"refused": int(exc.status), "message": exc.message}
    return {"error": f"unknown command {cmd!r}"}


async def run():
    host = make_host(LISTEN_ADDR)
    async with host.run(listen_addrs=[multiaddr.Multiaddr(LISTEN_ADDR)]):
        service = RendezvousService(host)
        emit(host_summary(host))
        async for cmd in stdin_commands():
            try:
                with trio.fail_after(30):
                    emit(await handle(host, service, cmd))
            except Exception as exc:  # report, keep serving the test
                emit({"error": repr(exc), "traceback": traceback.format_exc()})
    return 0


fix_eof_race()
code = trio.run(run)
sys.stdout.flush()
os._exit(code)
'''


def _peer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LIBP2P_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class PyPeer:
    proc: asyncio.subprocess.Process
    stderr_path: Path
    info: dict[str, Any]

    @property
    def peer_id(self) -> PeerId:
        return PeerId.from_string(self.info["peer_id"])

    @property
    def addr(self) -> str:
        return str(self.info["addrs"][0])

    async def command(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(STEP_TIMEOUT):
            raw = await self.proc.stdout.readline()
        if not raw:
            raise AssertionError(f"py-libp2p exited on {line!r}:\n"
                                 + self.stderr_path.read_text(errors="replace")[-4000:])
        reply: dict[str, Any] = json.loads(raw)
        assert "error" not in reply, f"{line!r}: {reply['error']}\n{reply.get('traceback', '')}"
        return reply


@asynccontextmanager
async def pypeer(python: str, tmp_path: Path) -> AsyncIterator[PyPeer]:
    script = tmp_path / "pylibp2p_rendezvous_peer.py"
    script.write_text(PEER_SCRIPT)
    stderr_path = tmp_path / "py.stderr"
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            python, str(script), str(HERE), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=stderr, env=_peer_env(), cwd=str(HERE))
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            first = await proc.stdout.readline()
        if not first:
            raise AssertionError("py-libp2p rendezvous peer exited early:\n"
                                 + stderr_path.read_text(errors="replace")[-4000:])
        yield PyPeer(proc, stderr_path, json.loads(first))
    finally:
        if proc.returncode is None and proc.stdin is not None:
            proc.stdin.write(b"quit\n")
            proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@dataclass
class Ours:
    host: Host
    client: RendezvousClient
    server: RendezvousServer

    @property
    def addr(self) -> str:
        return f"{self.host.listen_addrs()[0]}/p2p/{self.host.peer_id}"


@asynccontextmanager
async def ours() -> AsyncIterator[Ours]:
    async with AsyncExitStack() as stack:
        key = Ed25519PrivateKey.generate()
        host = await stack.enter_async_context(Host(key))
        await host.listen([Multiaddr(LISTEN)])
        server = await stack.enter_async_context(RendezvousServer(
            host, ServerConfig(registry=RegistryConfig())))
        yield Ours(host, RendezvousClient(host, key, host.listen_addrs), server)


async def test_overlay_client_at_a_pylibp2p_point(pylibp2p_python: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), pypeer(pylibp2p_python, tmp_path) as py, \
            ours() as node:
        await node.host.connect(py.addr)
        empty = await node.client.discover(py.peer_id, "nobody-here")
        assert empty.peers == () and empty.rejected == 0

        await py.command("seed interop")
        page = await node.client.discover(py.peer_id, "interop")
        # Its registration carries PeerInfo, not a signed record: unverifiable.
        assert page.peers == () and page.rejected == 1

        with pytest.raises(RendezvousRefused) as info:
            await node.client.register(py.peer_id, "interop")
        assert info.value.status == Status.E_NOT_AUTHORIZED
        assert (await py.command("registered interop"))["peers"] == [py.info["peer_id"]]


async def test_pylibp2p_client_at_an_overlay_point(pylibp2p_python: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), pypeer(pylibp2p_python, tmp_path) as py, \
            ours() as node:
        assert (await py.command(f"connect {node.addr}"))["connected"] == str(node.host.peer_id)
        point = str(node.host.peer_id)
        found = await py.command(f"discover {point} interop")
        assert found == {"peers": [], "cookie": found["cookie"]} and found["cookie"]

        refused = await py.command(f"register {point} interop")
        assert refused["refused"] == Status.E_INVALID_SIGNED_PEER_RECORD
        assert len(node.server.registry) == 0

        # The point is unharmed and still serves its own kind.
        async with AsyncExitStack() as stack:
            key = Ed25519PrivateKey.generate()
            peer = await stack.enter_async_context(Host(key))
            await peer.listen([Multiaddr(LISTEN)])
            await peer.connect(node.addr)
            client = RendezvousClient(peer, key, peer.listen_addrs)
            assert await client.register(node.host.peer_id, "interop") == 7200
            page = await client.discover(node.host.peer_id, "interop")
            assert [p.peer for p in page.peers] == [peer.peer_id]
