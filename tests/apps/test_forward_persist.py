"""Forwards outlive the daemon: ``<home>/forwards.json`` is written before
``forward_add`` answers, a restarted daemon listens on the same address
again, and a saved forward whose port is taken is listed with its error
and kept until closed.  The file's decoder skips bad entries."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from overlay.apps.daemon_ext import AppsExtension
from overlay.apps.forward_store import FORWARDS_FILE, SavedForward, parse_forwards
from overlay.daemon.config import DaemonConfig
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.daemon.ops_name import naming_extensions
from overlay.identity import PrivateKey
from overlay.statefile import CorruptState
from tests.apps.helpers import Node
from tests.namenet.helpers import FAST_HOST, FAST_KAD, FAST_NAMES, LOOPBACK


def _home(root: Path) -> tuple[Home, PrivateKey]:
    home = Home(root)
    return home, init_home(home, DaemonConfig(listen=(LOOPBACK,))).key


@asynccontextmanager
async def _node(home: Home, key: PrivateKey, bootstrap: tuple[str, ...] = ()
                ) -> AsyncIterator[Node]:
    config = DaemonConfig(listen=(LOOPBACK,), bootstrap=bootstrap)
    dht, names = naming_extensions(key, dns=None, names=FAST_NAMES, kad=FAST_KAD)
    apps = AppsExtension({})
    async with Daemon(home, config, key, host_config=FAST_HOST,
                      extensions=[dht, names, apps]) as d:
        if bootstrap:
            assert dht.kad is not None
            await dht.kad.bootstrapped.wait()
        yield Node(d, apps)


async def _echo_through(listen: str) -> bytes:
    host, port = listen.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"ping")
        writer.write_eof()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.read())
    await writer.drain()
    writer.close()


def _saved(home: Home) -> list[dict[str, str]]:
    doc = json.loads((home.root / FORWARDS_FILE).read_text())
    assert doc["format"] == "overlay-forwards" and doc["version"] == 1
    entries: list[dict[str, str]] = doc["forwards"]
    return entries


async def test_forwards_survive_a_restart(short_tmp: Path) -> None:
    homes = {n: _home(short_tmp / n) for n in ("i", "a", "b")}
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    blocker = socket.socket()
    try:
        async with asyncio.timeout(120), AsyncExitStack() as stack:
            intro = await stack.enter_async_context(_node(*homes["i"]))
            boot = (intro.daemon.full_addrs()[0],)
            b = await stack.enter_async_context(_node(*homes["b"], boot))
            await b.call("expose_add", {"service": "echo",
                                        "port": server.sockets[0].getsockname()[1]})
            await b.call("name_register", {"name": "bob.ovl"})
            a_home = homes["a"][0]
            async with _node(*homes["a"], boot) as a:
                first = await a.call("forward_add", {"listen": "127.0.0.1:0",
                                                     "target": "bob.ovl:echo"})
                second = await a.call("forward_add", {"listen": "127.0.0.1:0",
                                                      "target": "bob.ovl:echo"})
                # On disk before the reply, with the port the kernel chose.
                assert _saved(a_home) == [
                    {"listen": first["listen"], "target": "bob.ovl:echo"},
                    {"listen": second["listen"], "target": "bob.ovl:echo"}]
                assert await _echo_through(first["listen"]) == b"ping"
            # While a is down, something else takes the second forward's port.
            host, port = second["listen"].rsplit(":", 1)
            blocker.bind((host, int(port)))
            blocker.listen()
            async with _node(*homes["a"], boot) as a:
                listed = {f["listen"]: f for f in (await a.call("forward_list"))["forwards"]}
                assert listed[first["listen"]]["listening"] is True
                assert listed[first["listen"]]["name"] == "bob.ovl"
                assert await _echo_through(first["listen"]) == b"ping"
                busy = listed[second["listen"]]
                assert busy["listening"] is False and "cannot listen" in busy["last_error"]
                # Kept on disk, so the next start tries again.
                assert len(_saved(a_home)) == 2
                closed = await a.call("forward_close", {"listen": second["listen"]})
                assert closed["listen"] == second["listen"]
                assert _saved(a_home) == [{"listen": first["listen"],
                                           "target": "bob.ovl:echo"}]
                await a.call("forward_close", {"listen": first["listen"]})
                assert _saved(a_home) == []
            async with _node(*homes["a"], boot) as a:
                assert (await a.call("forward_list"))["forwards"] == []
    finally:
        blocker.close()
        server.close()
        await server.wait_closed()


def test_decoder_skips_bad_entries_and_keeps_the_rest() -> None:
    doc = {"forwards": [{"listen": "127.0.0.1:9000", "target": "a.ovl:http"}, 7,
                        {"listen": 9001, "target": "a.ovl:http"},
                        {"listen": "127.0.0.1:9000", "target": "b.ovl:http"},
                        {"listen": "[::1]:9002", "target": "c.ovl:ssh"},
                        {"listen": "127.0.0.1:9003", "target": "d.ovl:ssh"}]}
    saved, skipped = parse_forwards(doc, limit=2)
    assert saved == [SavedForward("127.0.0.1:9000", "a.ovl:http"),
                     SavedForward("[::1]:9002", "c.ovl:ssh")]
    assert len(skipped) == 4 and "listed twice" in skipped[2] and "limit" in skipped[3]
    with pytest.raises(CorruptState):
        parse_forwards({"forwards": {"listen": "x"}}, limit=2)


async def test_an_unreadable_file_is_replaced_at_the_next_change(short_tmp: Path) -> None:
    home, key = _home(short_tmp / "a")
    (home.root / FORWARDS_FILE).write_text('{"format": "overlay-forwards", "version": 9}')
    async with asyncio.timeout(60), _node(home, key) as a:
        # The daemon runs without the forwards it could not read ...
        assert (await a.call("forward_list"))["forwards"] == []
        added = await a.call("forward_add", {"listen": "127.0.0.1:0",
                                             "target": "bob.ovl:http"})
        # ... and the next change writes a file it can read again.
        assert _saved(home) == [{"listen": added["listen"], "target": "bob.ovl:http"}]
