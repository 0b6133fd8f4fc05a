"""The relay extension through real daemons on loopback: an introducer with
a ``relay_limits`` table, a node with ``relays`` keeping a reservation on
it, auto-relay on a private node, and ``relay_status`` on both sides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from overlay.daemon.client import ApiClient
from overlay.daemon.config import DaemonConfig
from overlay.daemon.errors import ApiError
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.relay.circuit import Circuit
from overlay.relay.client import open_circuit
from overlay.nat.reachability import Reachability, ReachabilityState
from overlay.relay.daemon_ext import RelayExtension

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


class Node:
    def __init__(self, daemon: Daemon, ext: RelayExtension) -> None:
        self.daemon = daemon
        self.ext = ext

    @property
    def addr(self) -> str:
        return self.daemon.full_addrs()[0]

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        async with await ApiClient.connect(self.daemon.api_path) as client:
            return await client.call(op, args)

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Poll relay_status after each change of the relay client."""
        client = self.ext.client
        assert client is not None
        async with asyncio.timeout(15):
            while True:
                client.changed.clear()
                reply = await self.call("relay_status")
                if predicate(reply):
                    return reply
                await client.changed.wait()


class FakeReachability:
    """A ReachabilitySource whose verdict the test sets."""

    def __init__(self) -> None:
        self.state = ReachabilityState(Reachability.UNKNOWN, ())
        self.listeners: list[Callable[[ReachabilityState], None]] = []

    def on_change(self, callback: Callable[[ReachabilityState], None]) -> Callable[[], None]:
        self.listeners.append(callback)
        return lambda: self.listeners.remove(callback)

    def set(self, verdict: Reachability) -> None:
        self.state = ReachabilityState(verdict, ())
        for callback in list(self.listeners):
            callback(self.state)


class FakeAutoNAT:
    def __init__(self) -> None:
        self.reachability = FakeReachability()

    @asynccontextmanager
    async def __call__(self, daemon: Any) -> AsyncIterator[None]:
        yield


@asynccontextmanager
async def node(root: Path, *, private: bool | None = None, autonat: Any = None,
               **config: Any) -> AsyncIterator[Node]:
    home = Home(root)
    cfg = DaemonConfig(listen=(LOOPBACK,), mdns=False, **config)
    key = init_home(home, cfg).key
    ext = RelayExtension(key, private=private)
    extensions = [autonat, ext] if autonat is not None else [ext]
    async with Daemon(home, cfg, key, extensions=extensions) as daemon:
        yield Node(daemon, ext)


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    async with AsyncExitStack() as stack:
        count = 0

        async def make(**kwargs: Any) -> Node:
            nonlocal count
            count += 1
            return await stack.enter_async_context(node(tmp_path / f"n{count}", **kwargs))

        yield make


async def test_static_relay_reservation_and_status_on_both_sides(nodes: Any) -> None:
    r = await nodes(introducer=True, relay_limits={"data": 10_000_000, "reservations_per_ip": 4})
    a = await nodes(relays=(r.addr,))
    reply = await a.until(lambda s: bool(s["reservations"]))
    me = a.daemon.peer_id
    assert reply["static_relays"] == [r.addr]
    entry = reply["reservations"][0]
    assert entry["relay"] == str(r.daemon.peer_id) and entry["voucher"] is True
    assert entry["limit"] == {"duration_s": 120.0, "data_bytes": 10_000_000}
    assert reply["advertised"] == [f"{r.addr}/p2p-circuit/p2p/{me}"]
    assert reply["server"] is None
    # The host advertises it (identify and the peer record carry it).
    assert f"{r.addr}/p2p-circuit" in [str(x) for x in a.daemon.host.advertised_addrs()]

    # B reaches A through the relay; the relay counts it.
    b = await nodes()
    await b.daemon.host.connect(r.addr)
    got: asyncio.Queue[Circuit] = asyncio.Queue()
    assert a.ext.client is not None
    previous = a.ext.client.on_circuit
    a.ext.client.on_circuit = got.put_nowait
    try:
        out = await open_circuit(b.daemon.host, r.daemon.peer_id, me)
        async with asyncio.timeout(10):
            inbound = await got.get()
        out.stream.write(b"ping")
        out.stream.write_eof()
        async with asyncio.timeout(10):
            assert await inbound.stream.read(100) == b"ping"
            inbound.stream.write_eof()
            assert await out.stream.read(100) == b""
    finally:
        a.ext.client.on_circuit = previous
    server = (await r.call("relay_status"))["server"]
    assert server["reservations_held"] == 1
    assert [e["peer"] for e in server["reservations"]] == [str(me)]
    assert server["circuits_total"] == 1
    assert server["limits"]["data_bytes"] == 10_000_000
    assert server["limits"]["reservations_per_ip"] == 4
    with pytest.raises(ApiError):
        await r.call("relay_status", bogus=1)


async def test_private_node_reserves_on_its_bootstrap_introducer(nodes: Any) -> None:
    r = await nodes(introducer=True)
    a = await nodes(bootstrap=(r.addr,), private=True)
    # Bootstrap dialing is the DHT's job, absent here: connect, then wake.
    await a.daemon.host.connect(r.addr)
    await a.daemon.host.identify(r.daemon.peer_id)
    assert a.ext.auto is not None
    a.ext.auto.wake()
    reply = await a.until(lambda s: bool(s["reservations"]))
    assert reply["private"] is True and reply["static_relays"] == []
    assert reply["reservations"][0]["relay"] == str(r.daemon.peer_id)


async def test_public_node_holds_no_auto_reservation(nodes: Any) -> None:
    r = await nodes(introducer=True)
    a = await nodes(bootstrap=(r.addr,), private=False)
    await a.daemon.host.connect(r.addr)
    await a.daemon.host.identify(r.daemon.peer_id)
    assert a.ext.auto is not None
    await a.ext.auto.step()
    reply = await a.call("relay_status")
    assert reply["reservations"] == [] and reply["private"] is False


async def test_autonat_turning_private_starts_auto_relay(nodes: Any) -> None:
    r = await nodes(introducer=True)
    autonat = FakeAutoNAT()
    a = await nodes(bootstrap=(r.addr,), autonat=autonat)
    await a.daemon.host.connect(r.addr)
    await a.daemon.host.identify(r.daemon.peer_id)
    assert a.ext.auto is not None
    await a.ext.auto.step()
    assert (await a.call("relay_status"))["reservations"] == []
    autonat.reachability.set(Reachability.PRIVATE)
    reply = await a.until(lambda s: bool(s["reservations"]))
    assert reply["private"] is True
    # Public again: the auto reservation is let go.
    autonat.reachability.set(Reachability.PUBLIC)
    reply = await a.until(lambda s: not s["reservations"])
    assert reply["private"] is False and reply["advertised"] == []


async def test_ping_through_a_relay_without_reservation_is_a_dial_failure(nodes: Any) -> None:
    r = await nodes(introducer=True)
    a, b = await nodes(), await nodes()
    circuit = f"{r.addr}/p2p-circuit/p2p/{a.daemon.peer_id}"
    with pytest.raises(ApiError) as info:
        await b.call("ping", addr=circuit, count=1)
    assert info.value.code == "dial_failed"
    assert "the relay refused (NO_RESERVATION)" in str(info.value)
    server = (await r.call("relay_status"))["server"]
    assert server["refusals"] == {"no_reservation": 1}
