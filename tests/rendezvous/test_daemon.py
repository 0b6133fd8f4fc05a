"""The rendezvous ops through real daemons on loopback: an introducer and
peers that register, discover (by default at their bootstrap peers that
serve the protocol, or `at` one), unregister and withdraw on shutdown."""

from __future__ import annotations

import asyncio
import base64
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
from overlay.rendezvous import PROTOCOL_ID, RegistryConfig, ServerConfig
from overlay.rendezvous.daemon_ext import RendezvousExtension

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


class Node:
    def __init__(self, daemon: Daemon, ext: RendezvousExtension) -> None:
        self.daemon = daemon
        self.ext = ext

    @property
    def addr(self) -> str:
        return self.daemon.full_addrs()[0]

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        async with await ApiClient.connect(self.daemon.api_path) as client:
            return await client.call(op, args)


@asynccontextmanager
async def node(root: Path, *, introducer: bool = False, bootstrap: tuple[str, ...] = (),
               min_ttl: int = 10) -> AsyncIterator[Node]:
    home = Home(root)
    config = DaemonConfig(listen=(LOOPBACK,), introducer=introducer, bootstrap=bootstrap)
    key = init_home(home, config).key
    ext = RendezvousExtension(key, server_config=ServerConfig(
        registry=RegistryConfig(min_ttl=min_ttl)))
    async with Daemon(home, config, key, extensions=[ext]) as daemon:
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


async def test_register_discover_unregister_through_the_api(nodes: Any) -> None:
    r = await nodes(introducer=True)
    a, b, c = [await nodes(bootstrap=(r.addr,)) for _ in range(3)]
    reply = await a.call("rendezvous_register", ns="chat", ttl=3600)
    assert [x["point"] for x in reply["registered"]] == [str(r.daemon.peer_id)]
    assert reply["registered"][0]["ttl"] == 3600 and reply["failed"] == []
    await b.call("rendezvous_register", ns="chat")
    found = await c.call("rendezvous_discover", ns="chat")
    by_peer = {p["peer_id"]: p for p in found["peers"]}
    assert set(by_peer) == {str(a.daemon.peer_id), str(b.daemon.peer_id)}
    assert by_peer[str(a.daemon.peer_id)]["addrs"] == a.daemon.full_addrs()
    assert found["cookie"] and found["points"][0]["count"] == 2
    # The discovering daemon can now reach A by its ID alone.
    pong = await c.call("ping", peer=str(a.daemon.peer_id))
    assert pong["peer_id"] == str(a.daemon.peer_id)
    # A cookie returns only what is new.
    again = await c.call("rendezvous_discover", ns="chat", cookie=found["cookie"])
    assert again["peers"] == []
    await a.call("rendezvous_unregister", ns="chat")
    server = r.ext.server
    assert server is not None
    async with asyncio.timeout(10):
        while server.registry.get("chat", a.daemon.peer_id) is not None:
            server.activity.clear()
            await server.activity.wait()
    found = await c.call("rendezvous_discover", ns="chat")
    assert [p["peer_id"] for p in found["peers"]] == [str(b.daemon.peer_id)]
    assert a.ext.refresher is not None and len(a.ext.refresher.plan) == 0
    assert b.ext.refresher is not None and len(b.ext.refresher.plan) == 1


async def test_explicit_point_by_multiaddr_and_by_peer_id(nodes: Any) -> None:
    r = await nodes(introducer=True)
    a = await nodes()
    c = await nodes()
    await a.call("rendezvous_register", ns="x", at=r.addr)
    found = await c.call("rendezvous_discover", ns="x", at=r.addr)
    assert [p["peer_id"] for p in found["peers"]] == [str(a.daemon.peer_id)]
    found = await c.call("rendezvous_discover", ns="", at=str(r.daemon.peer_id))
    assert len(found["peers"]) == 1


async def test_no_point_and_non_serving_points_are_clear_errors(nodes: Any) -> None:
    plain = await nodes()  # not an introducer: no rendezvous service
    a = await nodes(bootstrap=(plain.addr,))
    assert PROTOCOL_ID not in plain.daemon.host.protocols()
    with pytest.raises(ApiError) as info:
        await a.call("rendezvous_discover", ns="x")
    assert info.value.code == "no_rendezvous_point" and "--at" in info.value.message
    with pytest.raises(ApiError) as info:
        await a.call("rendezvous_register", ns="x", at=plain.addr)
    assert info.value.code == "protocol_not_supported"


@pytest.mark.parametrize("args, code", [
    ({"ns": ""}, "bad_request"),
    ({"ns": "x" * 256}, "bad_request"),
    ({"ns": "ok", "ttl": 0}, "bad_request"),
    ({"ns": "ok", "ttl": 73 * 3600}, "bad_request"),
    ({"ns": "ok", "ttl": 5}, "bad_request"),  # below the point's minimum: its E_INVALID_TTL
    ({"ns": "ok", "at": "garbage"}, "invalid_peer_id"),
    ({"ns": "ok", "at": "/ip4/1.2.3.4/tcp/1"}, "invalid_multiaddr"),
])
async def test_bad_register_arguments(nodes: Any, args: dict[str, Any], code: str) -> None:
    r = await nodes(introducer=True)
    a = await nodes(bootstrap=(r.addr,))
    with pytest.raises(ApiError) as info:
        await a.call("rendezvous_register", **args)
    assert info.value.code == code


async def test_bad_discover_arguments(nodes: Any) -> None:
    r = await nodes(introducer=True)
    a = await nodes(bootstrap=(r.addr,))
    for args in ({"ns": "x", "limit": 0}, {"ns": "x", "cookie": "%%%"},
                 {"ns": "x", "cookie": base64.b64encode(b"forged").decode()}):
        with pytest.raises(ApiError) as info:
            await a.call("rendezvous_discover", **args)
        assert info.value.code == "bad_request", args


async def test_a_stopping_daemon_withdraws_its_registrations(tmp_path: Path, nodes: Any) -> None:
    r = await nodes(introducer=True)
    async with node(tmp_path / "leaving", bootstrap=(r.addr,)) as a:
        await a.call("rendezvous_register", ns="bye")
        peer = a.daemon.peer_id
    server = r.ext.server
    assert server is not None
    async with asyncio.timeout(10):
        while server.registry.get("bye", peer) is not None:
            server.activity.clear()
            await server.activity.wait()
