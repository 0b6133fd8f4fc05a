"""DCUtR inside the daemon on loopback: on by default, `peers --json`,
`ping --json` and `connect` report `punched`; `holepunch = false` keeps
the relayed connection; and the relayed connection's open stream finishes
there while new streams take the direct one."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from overlay.daemon.client import ApiClient
from overlay.daemon.config import DaemonConfig
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.host import NegotiatedStream
from overlay.host.transport_types import Connection
from overlay.nat.dcutr_core import DcutrConfig
from overlay.nat.dcutr_ext import DcutrExtension
from overlay.nat.dcutr_service import DcutrService, DcutrServiceConfig
from overlay.relay.client import RelayClient
from overlay.relay.server import RelayServer
from overlay.relay.server_core import RelayLimits
from tests.waiting import host_changes, wait_until

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


PUNCH_ONLY = DcutrServiceConfig(core=DcutrConfig(allow_private=True), unilateral=False,
                                idle_check=0.05)
"""On loopback every advertised address answers, so the unilateral dial
would always win; these tests switch it off to make the punch happen."""


@asynccontextmanager
async def _daemon(root: Path, dcutr: DcutrServiceConfig | None = None,
                  **config: Any) -> AsyncIterator[Daemon]:
    home = Home(root)
    # autonat = "lab": loopback counts as public for punching, as in the lab.
    cfg = DaemonConfig(listen=(LOOPBACK,), autonat="lab", **config)
    key = init_home(home, cfg).key
    async with Daemon(home, cfg, key, extensions=[DcutrExtension(dcutr)]) as daemon:
        yield daemon


def _dcutr(daemon: Daemon) -> DcutrService:
    """The daemon's running DCUtR service (its ``activity`` is set when a
    session ends)."""
    for extension in daemon.extensions:
        if isinstance(extension, DcutrExtension) and extension.service is not None:
            return extension.service
    raise AssertionError("the daemon runs no DCUtR service")


@asynccontextmanager
async def _three(root: Path, dcutr: DcutrServiceConfig | None = None,
                 **config: Any) -> AsyncIterator[tuple[Daemon, Daemon, Daemon]]:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(_daemon(root / "a", dcutr, **config))
        r = await stack.enter_async_context(_daemon(root / "r", holepunch=False))
        c = await stack.enter_async_context(_daemon(root / "c", dcutr, **config))
        await stack.enter_async_context(RelayServer(r.host, r._key, RelayLimits()))
        client = await stack.enter_async_context(RelayClient(c.host))
        await c.host.connect(r.full_addrs()[0])
        await client.reserve(r.peer_id)
        yield a, r, c


def _path(conn: Connection | None) -> str | None:
    return None if conn is None else conn.path


def _circuit(r: Daemon, c: Daemon) -> str:
    return f"{r.full_addrs()[0]}/p2p-circuit/p2p/{c.peer_id}"


async def test_peers_and_ping_report_a_punched_direct_connection(short_tmp: Path) -> None:
    async with _three(short_tmp, PUNCH_ONLY) as (a, r, c), asyncio.timeout(40):
        async with await ApiClient.connect(a.api_path) as api:
            reply = await api.call("connect", {"addr": _circuit(r, c)})
            assert reply["path"] == "relayed" and reply["punched"] is False
            # A (the responder) marks the connection it dialled punched
            # before its session ends and sets ``activity``.
            await wait_until(lambda: any(a.host.is_punched(x) for x in a.host.connections()),
                             _dcutr(a).activity, timeout=15)
            peers = {p["peer_id"]: p for p in (await api.call("peers"))["peers"]}
            to_c = peers[str(c.peer_id)]
            assert to_c["path"] == "direct" and to_c["punched"] is True
            assert to_c["connections"][0]["punched"] is True
            assert peers[str(r.peer_id)]["punched"] is False
            pinged = await api.call("ping", {"addr": f"/p2p/{c.peer_id}", "count": 1})
            assert pinged["path"] == "direct" and pinged["punched"] is True
            status = await api.call("holepunch_status")
            assert status["enabled"] and status["counters"]["punched"] == 1
            assert status["recent"][0]["role"] == "responder"


SPEC_ONLY = DcutrServiceConfig(core=DcutrConfig(allow_private=True, early_dial=False))
"""Without our early dial, whose Initial (on CONNECT) would beat the
unilateral dial on loopback, where every address answers."""


async def test_the_spec_unilateral_upgrade_dials_a_public_peer_directly_unpunched(
        short_tmp: Path) -> None:
    # The spec's unilateral upgrade: C (dialled through R) dials A's
    # advertised address before any punch; on loopback it answers.
    async with _three(short_tmp, SPEC_ONLY) as (a, r, c), asyncio.timeout(40):
        async with await ApiClient.connect(a.api_path) as api, host_changes(a.host) as changed:
            await api.call("connect", {"addr": _circuit(r, c)})
            # C's direct dial arrives as a connection A adopts (``opened``).
            await wait_until(lambda: any(x.path == "direct" for x in a.host.connections()
                                         if x.remote_peer == c.peer_id), changed, timeout=15)
            peers = {p["peer_id"]: p for p in (await api.call("peers"))["peers"]}
            assert peers[str(c.peer_id)]["path"] == "direct"
            assert peers[str(c.peer_id)]["punched"] is False
        async with await ApiClient.connect(c.api_path) as api:
            status = await api.call("holepunch_status")
            assert status["recent"][0]["how"] == "unilateral"
            # SYNC no longer waits for the unilateral dial, so a few punch
            # packets may have gone out beside it; nothing counts as punched.
            assert status["counters"]["punched"] == 0 and status["counters"]["unilateral"] == 1


async def test_holepunch_false_keeps_the_relayed_connection(short_tmp: Path) -> None:
    async with _three(short_tmp, holepunch=False) as (a, r, c), asyncio.timeout(40):
        async with await ApiClient.connect(a.api_path) as api:
            await api.call("connect", {"addr": _circuit(r, c)})
            pinged = await api.call("ping", {"addr": f"/p2p/{c.peer_id}", "count": 2})
            assert pinged["path"] == "relayed" and pinged["punched"] is False
            status = await api.call("holepunch_status")
            assert status["enabled"] is False
        # Nobody serves /libp2p/dcutr, so no upgrade can ever start.
        assert "/libp2p/dcutr" not in c.host.protocols()
        assert [x.path for x in a.host.connections() if x.remote_peer == c.peer_id] == ["relayed"]


async def _echo(stream: NegotiatedStream) -> None:
    while chunk := await stream.read():
        stream.write(chunk)
        await stream.drain()
    await stream.close()


async def test_an_open_relayed_stream_finishes_there_then_the_relayed_connection_closes(
        short_tmp: Path) -> None:
    async with _three(short_tmp, holepunch=False) as (a, r, c), asyncio.timeout(40):
        c.host.set_stream_handler("/test/echo", _echo)
        relayed = await a.host.connect(_circuit(r, c))
        old = await a.host.new_stream(c.peer_id, ["/test/echo"])
        assert old.conn is relayed
        # Now hole punching starts (as a daemon with it on would).
        async with DcutrService(a.host, PUNCH_ONLY), DcutrService(c.host, PUNCH_ONLY) as dc, \
                host_changes(a.host) as a_changed, host_changes(c.host) as c_changed:
            inbound = c.host.best_connection(a.peer_id)
            assert inbound is not None and inbound.path == "relayed"
            dc.upgrade(inbound)
            # Each host adopts the direct connection (``opened``), and
            # best_connection prefers it from then on.
            await wait_until(lambda: _path(c.host.best_connection(a.peer_id)) == "direct",
                             c_changed, timeout=15)
            await wait_until(lambda: _path(a.host.best_connection(c.peer_id)) == "direct",
                             a_changed, timeout=15)
            new = await a.host.new_stream(c.peer_id, ["/test/echo"])
            assert new.conn.path == "direct"
            # The old stream still works on the relayed connection...
            payload = os.urandom(5000)
            old.write(payload)
            await old.drain()
            got = b""
            while len(got) < len(payload):
                got += await old.read()
            assert got == payload and not relayed.is_closed
            # ...and once it ends, the relayed connection closes.
            old.write_eof()
            assert await old.read() == b""
            await relayed.wait_closed()
            new.write(b"x")
            await new.drain()
            assert await new.read() == b"x"
            new.write_eof()
