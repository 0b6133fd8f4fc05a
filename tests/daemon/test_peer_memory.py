"""A restarted introduction node (no bootstrap list) finds its peers again
through ``<home>/peers.json``: real in-process daemons on loopback QUIC."""

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from overlay.daemon.client import ApiClient
from overlay.daemon.config import DaemonConfig
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.daemon.ops_dht import DhtExtension
from overlay.daemon.persist import PeerMemoryConfig
from overlay.daemon.persist_peers import PeerMemoryExtension
from overlay.kad.service import KadService

from tests.daemon.helpers import LOOPBACK


@asynccontextmanager
async def dht_daemon(
    root: Path, bootstrap: Sequence[str] = ()
) -> AsyncIterator[tuple[Daemon, KadService, PeerMemoryExtension]]:
    home = Home(root)
    config = DaemonConfig(listen=(LOOPBACK,), bootstrap=tuple(bootstrap))
    key = init_home(home, config).key
    dht = DhtExtension(state_file=None)
    memory = PeerMemoryExtension(dht, PeerMemoryConfig(save_interval=3600.0))
    async with Daemon(home, config, key, extensions=[dht, memory]) as daemon:
        assert dht.kad is not None
        yield daemon, dht.kad, memory


async def test_restarted_introduction_node_reconnects_to_remembered_peers(
        short_tmp: Path) -> None:
    async with asyncio.timeout(60), AsyncExitStack() as outer:
        # The introduction node must stop before the peer it started before.
        intro_stack = AsyncExitStack()
        outer.push_async_callback(intro_stack.aclose)  # a no-op once closed below
        intro, intro_kad, memory = await intro_stack.enter_async_context(
            dht_daemon(short_tmp / "intro"))
        assert memory.restored.is_set()  # nothing remembered on a first start
        peer, _, _ = await outer.enter_async_context(
            dht_daemon(short_tmp / "peer", [intro.full_addrs()[0]]))
        # Identify names it a DHT server; it enters once it answered the
        # request that admits it.
        while peer.peer_id not in intro_kad.table:
            intro_kad.activity.clear()
            await intro_kad.activity.wait()

        await intro_stack.aclose()  # stops, saving its memory; the peer runs on
        saved = json.loads((short_tmp / "intro" / "peers.json").read_bytes())
        assert saved["version"] == 1
        assert [p["peer_id"] for p in saved["peers"]] == [str(peer.peer_id)]

        async with dht_daemon(short_tmp / "intro") as (again, again_kad, memory2):
            assert again.config.bootstrap == ()
            await memory2.restored.wait()
            assert peer.peer_id in again.host.peers()
            assert peer.peer_id in again_kad.table
            async with await ApiClient.connect(again.api_path) as client:
                status = await client.call("status")
            assert status["dht"]["table_size"] >= 1
            assert status["peers"] == [str(peer.peer_id)]
