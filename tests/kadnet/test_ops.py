"""The dht_* stream-API ops against daemons running the DHT extension."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from overlay.daemon.client import ApiClient
from overlay.daemon.config import DaemonConfig
from overlay.daemon.errors import ApiError
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.daemon.ops_dht import DhtExtension, provider_key
from overlay.kad.records import immutable_key

from tests.kadnet.helpers import FAST_HOST, FAST_KAD, LOOPBACK

TIMEOUT = 40.0


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ovl-dht-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def dht_daemons(root: Path, count: int) -> AsyncIterator[list[tuple[Daemon, DhtExtension]]]:
    """``count`` daemons; every one after the first bootstraps through it."""
    async with AsyncExitStack() as stack:
        out: list[tuple[Daemon, DhtExtension]] = []
        for index in range(count):
            home = Home(root / f"n{index}")
            bootstrap = (out[0][0].full_addrs()[0],) if out else ()
            config = DaemonConfig(listen=(LOOPBACK,), bootstrap=bootstrap)
            key = init_home(home, config).key
            dht = DhtExtension(FAST_KAD)
            daemon = await stack.enter_async_context(
                Daemon(home, config, key, host_config=FAST_HOST, extensions=[dht]))
            assert dht.kad is not None
            if bootstrap:
                await dht.kad.bootstrapped.wait()
            out.append((daemon, dht))
        yield out


async def test_dht_ops_end_to_end(short_tmp: Path) -> None:
    async with asyncio.timeout(TIMEOUT), dht_daemons(short_tmp, 4) as nodes:
        (a, _), (b, _), (c, _), (d, _) = nodes
        async with await ApiClient.connect(a.api_path) as api:
            put = await api.call("dht_put", {"value": "hello from the api"})
            assert put["key"] == immutable_key(b"hello from the api").decode()
            assert put["replicas"] >= 1
            table = await api.call("dht_table")
            assert table["mode"] == "server" and table["protocol"] == "/ovl/kad/1.0.0"
            assert table["size"] == 3 and sum(b["size"] for b in table["buckets"]) == 3
            assert str(b.peer_id) in table["peers"]
            provided = await api.call("dht_provide", {"key": put["key"]})
            assert provided["provider_key"] == provider_key(put["key"]).hex()
            assert provided["peers"] >= 1

        async with await ApiClient.connect(d.api_path) as api:
            got = await api.call("dht_get", {"key": put["key"]})
            assert got["value"] == "hello from the api"
            found = await api.call("dht_find_peer", {"peer": str(c.peer_id)})
            assert str(c.listen_addrs()[0]) in found["addrs"]
            providers = await api.call("dht_find_providers", {"key": put["key"]})
            assert str(a.peer_id) in [p["peer_id"] for p in providers["providers"]]

            with pytest.raises(ApiError) as missing:
                await api.call("dht_get", {"key": immutable_key(b"nothing").decode()})
            assert missing.value.code == "not_found"
            with pytest.raises(ApiError) as unknown:
                await api.call("dht_get", {"key": "/nope/x"})
            assert unknown.value.code == "invalid_record"
            with pytest.raises(ApiError) as bad:
                await api.call("dht_put", {})
            assert bad.value.code == "bad_request"
            with pytest.raises(ApiError) as bad_peer:
                await api.call("dht_find_peer", {"peer": "not-a-peer"})
            assert bad_peer.value.code == "invalid_peer_id"
            with pytest.raises(ApiError) as no_providers:
                await api.call("dht_find_providers", {"key": "nobody provides this"})
            assert no_providers.value.code == "not_found"
        # The putter's own record persists in its data directory.
        saved = (Path(a.home.root) / "dht" / "records.log").read_text()
        assert put["key"] in saved or "aGVsbG8gZnJvbSB0aGUgYXBp" in saved


async def test_lonely_daemon_reports_no_peers(short_tmp: Path) -> None:
    async with asyncio.timeout(TIMEOUT), dht_daemons(short_tmp, 1) as [(a, _)]:
        async with await ApiClient.connect(a.api_path) as api:
            with pytest.raises(ApiError) as lonely:
                await api.call("dht_put", {"value": "no one to tell"})
            assert lonely.value.code == "no_peers"


async def test_connect_and_ping_by_peer_id_alone_use_the_dht(short_tmp: Path) -> None:
    async with asyncio.timeout(TIMEOUT), dht_daemons(short_tmp, 3) as nodes:
        (_, _), (b, _), (c, _) = nodes
        target = c.peer_id
        # `b` must learn `c` from the DHT, not from a connection it has.
        gone = asyncio.Event()
        from overlay.host import HostListener

        b.host.add_listener(HostListener(disconnected=lambda p: gone.set() if p == target else None))
        if target in b.host.peers():
            b.host.disconnect(target)
            await gone.wait()
        b.host.peerstore.remove(target)
        async with await ApiClient.connect(b.api_path) as api:
            reply = await api.call("connect", {"addr": f"/p2p/{target}"})
            assert reply["peer_id"] == str(target) and reply["direction"] == "outbound"
            b.host.disconnect(target)
            b.host.peerstore.remove(target)
            pong = await api.call("ping", {"peer": str(target), "count": 1})
            assert pong["peer_id"] == str(target)
            with pytest.raises(ApiError) as unknown:
                from overlay.identity import Ed25519PrivateKey, PeerId

                nobody = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
                await api.call("connect", {"addr": f"/p2p/{nobody}"})
            assert unknown.value.code == "not_found"


async def test_extension_takes_mode_and_protocol_from_the_daemon_config(short_tmp: Path) -> None:
    home = Home(short_tmp / "client")
    config = DaemonConfig(listen=(LOOPBACK,), dht_mode="client", kad_protocol="/test/kad/1.0.0")
    key = init_home(home, config).key
    dht = DhtExtension()
    async with asyncio.timeout(TIMEOUT), Daemon(home, config, key, host_config=FAST_HOST,
                                                 extensions=[dht]) as daemon:
        assert dht.kad is not None and dht.kad.protocol == "/test/kad/1.0.0"
        assert not dht.kad.is_server and "/test/kad/1.0.0" not in daemon.host.protocols()
        async with await ApiClient.connect(daemon.api_path) as api:
            table = await api.call("dht_table")
            assert table["mode"] == "client" and table["protocol"] == "/test/kad/1.0.0"
