"""A reaches C through relay B over real QUIC on loopback: the circuit
transport dials ``/…/p2p/B/p2p-circuit/p2p/C``, Noise and yamux run over
the relay's splice, ping and streams work, the relay's data limit ends the
connection on both sides, and the daemon API shows the path."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from overlay.daemon.client import ApiClient
from overlay.host import Host, NegotiatedStream
from overlay.host.muxed import MuxedConnection
from overlay.identity import Ed25519PrivateKey
from overlay.relay.client import RelayClient
from overlay.relay.server import RelayServer
from overlay.relay.server_core import RelayLimits

from tests.daemon.helpers import running_daemon
from tests.waiting import wait_for_hosts

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


@dataclass
class Trio:
    a: Host
    relay: Host
    c: Host
    client: RelayClient

    def circuit_addr(self) -> str:
        return (f"{self.relay.listen_addrs()[0]}/p2p/{self.relay.peer_id}"
                f"/p2p-circuit/p2p/{self.c.peer_id}")


@pytest.fixture
def limits() -> RelayLimits:
    return RelayLimits()


@pytest.fixture
async def trio(limits: RelayLimits) -> AsyncIterator[Trio]:
    async with AsyncExitStack() as stack:
        relay_key = Ed25519PrivateKey.generate()
        relay = await stack.enter_async_context(Host(relay_key))
        await relay.listen([LOOPBACK])
        await stack.enter_async_context(RelayServer(relay, relay_key, limits))
        hosts = []
        for _ in range(2):
            host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
            await host.listen([LOOPBACK])
            hosts.append(host)
        a, c = hosts
        client = await stack.enter_async_context(RelayClient(c))
        await c.connect(f"{relay.listen_addrs()[0]}/p2p/{relay.peer_id}")
        await client.reserve(relay.peer_id)
        yield Trio(a, relay, c, client)


async def _until(predicate, *hosts: Host) -> None:  # type: ignore[no-untyped-def]
    # The listener's side finishes its upgrade (or end) in its own task:
    # re-check whenever one of the hosts tells its listeners of a connection.
    await wait_for_hosts(predicate, *hosts, timeout=10)


async def _echo(stream: NegotiatedStream) -> None:
    while chunk := await stream.read():
        stream.write(chunk)
        await stream.drain()
    await stream.close()


async def test_a_pings_c_through_the_relay(trio: Trio) -> None:
    a, c = trio.a, trio.c
    async with asyncio.timeout(20):
        conn = await a.connect(trio.circuit_addr())
        assert isinstance(conn, MuxedConnection)
        assert conn.path == "relayed" and conn.remote_peer == c.peer_id
        assert str(conn.remote_multiaddr) == trio.circuit_addr().rsplit("/p2p/", 1)[0]
        assert conn.limit is not None and conn.limit.data == RelayLimits().circuit_data
        pong = await a.ping_service.ping(c.peer_id)
        assert pong.path == "relayed" and 0 < pong.rtt < 5
        await _until(lambda: c.best_connection(a.peer_id) is not None, c)
        back = c.best_connection(a.peer_id)
        assert back is not None and back.path == "relayed"
        assert (await c.ping_service.ping(a.peer_id)).path == "relayed"
        # A's only connection to C is the relayed one: nothing went direct.
        assert [x.path for x in a.connections() if x.remote_peer == c.peer_id] == ["relayed"]

        c.set_stream_handler("/test/echo", _echo)
        stream = await a.new_stream(c.peer_id, ["/test/echo"])
        payload = os.urandom(40_000)
        stream.write(payload)
        await stream.drain()
        stream.write_eof()
        got = bytearray()
        while chunk := await stream.read():
            got += chunk
        assert bytes(got) == payload


@pytest.mark.parametrize("limits", [RelayLimits(circuit_data=64 * 1024)])
async def test_the_relays_data_limit_ends_the_connection_on_both_sides(trio: Trio) -> None:
    a, c = trio.a, trio.c
    async with asyncio.timeout(20):
        conn = await a.connect(trio.circuit_addr())
        await _until(lambda: c.best_connection(a.peer_id) is not None, c)
        back = c.best_connection(a.peer_id)
        assert back is not None
        c.set_stream_handler("/test/echo", _echo)
        stream = await a.new_stream(c.peer_id, ["/test/echo"])
        chunk = os.urandom(16 * 1024)

        async def flood() -> None:
            # Stops when the relay cuts the circuit and the stream fails.
            while True:
                stream.write(chunk)
                await stream.drain()

        async def drain_echo() -> None:
            while await stream.read():
                pass

        with pytest.raises(ExceptionGroup):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(flood())
                tg.create_task(drain_echo())
        await conn.wait_closed()
        await back.wait_closed()
        await _until(lambda: c.peer_id not in a.peers() and a.peer_id not in c.peers(), a, c)


async def test_a_direct_dial_after_the_relayed_one_takes_over(trio: Trio) -> None:
    a, c = trio.a, trio.c
    async with asyncio.timeout(20):
        relayed = await a.connect(trio.circuit_addr())
        direct = await a.connect(f"{c.listen_addrs()[0]}/p2p/{c.peer_id}")
        assert direct.path == "direct" and a.best_connection(c.peer_id) is direct
        assert (await a.ping_service.ping(c.peer_id)).path == "direct"
        assert not relayed.is_closed


async def test_daemon_api_dials_a_circuit_and_reports_the_path(short_tmp: Path) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_daemon(short_tmp / "a"))
        r = await stack.enter_async_context(running_daemon(short_tmp / "r"))
        c = await stack.enter_async_context(running_daemon(short_tmp / "c"))
        await stack.enter_async_context(RelayServer(r.host, r._key, RelayLimits()))
        client = await stack.enter_async_context(RelayClient(c.host))
        async with asyncio.timeout(30):
            await c.host.connect(r.full_addrs()[0])
            await client.reserve(r.peer_id)
            target = f"{r.full_addrs()[0]}/p2p-circuit/p2p/{c.peer_id}"
            async with await ApiClient.connect(a.api_path) as api:
                reply = await api.call("connect", {"addr": target})
                assert reply["peer_id"] == str(c.peer_id) and reply["path"] == "relayed"
                events: list[dict[str, Any]] = []
                pinged = await api.call("ping", {"addr": target, "count": 2},
                                        on_event=events.append)
                assert pinged["path"] == "relayed" and pinged["count"] == 2
                assert [e["path"] for e in events] == ["relayed", "relayed"]
                assert not pinged["used_existing"]
                peers = {p["peer_id"]: p for p in (await api.call("peers"))["peers"]}
                to_c = peers[str(c.peer_id)]
                assert to_c["path"] == "relayed"
                assert [x["path"] for x in to_c["connections"]] == ["relayed"]
                assert to_c["connections"][0]["limit"]["data_bytes"] == RelayLimits().circuit_data
                assert peers[str(r.peer_id)]["path"] == "direct"
