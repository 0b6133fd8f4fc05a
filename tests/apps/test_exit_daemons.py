"""Exits with real daemons on loopback: curl through a client's proxy
reaches a "clear web" HTTP server on 127.0.0.1 through an exit (whose
test-only ``unsafe_lab_destinations`` lists exactly 127.0.0.1/32); other
loopback addresses, other ports and clients outside the allowlist are
refused with a readable error and counted; per-client limits hold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any


from overlay.apps.daemon_ext import AppsExtension
from overlay.apps.exit_policy import ExitConfig
from overlay.daemon.config import DaemonConfig
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.daemon.ops_name import naming_extensions
from overlay.daemon.ops_stats import StatsExtension
from overlay.identity import PeerId, PrivateKey
from tests.apps.helpers import Node, curl, http_server
from tests.namenet.helpers import FAST_HOST, FAST_KAD, FAST_NAMES, LOOPBACK

BIG = 1 << 20


def _home(root: Path) -> tuple[Home, PrivateKey]:
    home = Home(root)
    return home, init_home(home, DaemonConfig(listen=(LOOPBACK,))).key


@asynccontextmanager
async def _node(home: Home, key: PrivateKey, bootstrap: tuple[str, ...] = (), *,
                proxy: bool = False, exit: ExitConfig | None = None,
                exit_via: str | None = None) -> AsyncIterator[Node]:
    config = DaemonConfig(listen=(LOOPBACK,), bootstrap=bootstrap)
    dht, names = naming_extensions(key, dns=None, names=FAST_NAMES, kad=FAST_KAD)
    apps = AppsExtension({}, ("127.0.0.1", 0) if proxy else None, persist=False,
                         exit=exit or ExitConfig(), exit_via=exit_via or "off")
    async with Daemon(home, config, key, host_config=FAST_HOST,
                      extensions=[dht, names, apps, StatsExtension()]) as d:
        if bootstrap:
            assert dht.kad is not None
            await dht.kad.bootstrapped.wait()
        yield Node(d, apps)


async def _connect_tunnel(proxy: str, target: str) -> tuple[asyncio.StreamReader,
                                                            asyncio.StreamWriter, bytes]:
    """An HTTP CONNECT through ``proxy``; returns the streams and the answer's head."""
    host, port = proxy.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, head


async def test_exit_serves_allowed_clients_and_refuses_the_rest(short_tmp: Path) -> None:
    site = short_tmp / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>the clear web</h1>\n")
    (site / "big.bin").write_bytes(b"x" * BIG)
    homes = {n: _home(short_tmp / n) for n in ("i", "e", "a", "b")}
    a_id = str(PeerId.from_public_key(homes["a"][1].public_key()))
    with http_server(site) as port, http_server(site) as other_port:
        exit_config = ExitConfig(enabled=True, ports=(port,), allow=(a_id,),
                                 max_connections=2, max_bytes=400_000,
                                 unsafe_lab_destinations=("127.0.0.1/32",))
        async with asyncio.timeout(180), AsyncExitStack() as stack:
            intro = await stack.enter_async_context(_node(*homes["i"]))
            boot = (intro.daemon.full_addrs()[0],)
            e = await stack.enter_async_context(_node(*homes["e"], boot, exit=exit_config))
            server = e.apps.exit_server
            assert server is not None
            await server.announced.wait()
            a = await stack.enter_async_context(
                _node(*homes["a"], boot, proxy=True, exit_via=str(e.daemon.peer_id)))
            b = await stack.enter_async_context(
                _node(*homes["b"], boot, proxy=True, exit_via="auto"))
            url = f"http://127.0.0.1:{port}/index.html"

            # Allowed: through the exit, by SOCKS5 and by the HTTP proxy.
            for via in (["--socks5-hostname", a.proxy], ["-x", f"http://{a.proxy}"]):
                status, out, err = await curl(*via, url)
                assert (status, out) == (0, b"<h1>the clear web</h1>\n"), err
            stats = await e.call("stats")
            assert stats["exit"]["connections"] == 2
            assert stats["exit"]["clients"][a_id]["connections"] == 2
            assert stats["exit"]["bytes_to_clients"] > 2 * len("<h1>the clear web</h1>\n")
            dialer = a.apps.exit_dialer
            assert dialer is not None and dialer.opened == 2
            # The same exit chosen as `auto` (found in the DHT) and by its name.
            await e.call("name_register", {"name": "exit.ovl"})
            for choice in ("auto", "exit.ovl"):
                dialer.choice, dialer.current = choice, None
                status, out, err = await curl("--socks5-hostname", a.proxy, url)
                assert (status, out) == (0, b"<h1>the clear web</h1>\n"), err
                assert dialer.current == e.daemon.peer_id
            assert dialer.opened == 4
            # auto again: the exit that answered last, without asking the DHT.
            dialer.choice = "auto"
            lookups: list[bytes] = []
            find = dialer.find_providers

            async def counted(key: bytes) -> Sequence[tuple[PeerId, tuple[bytes, ...]]]:
                lookups.append(key)
                return await find(key)

            dialer.find_providers = counted
            for _ in range(2):
                status, out, err = await curl("--socks5-hostname", a.proxy, url)
                assert (status, out) == (0, b"<h1>the clear web</h1>\n"), err
            assert lookups == [] and dialer.opened == 6
            dialer.choice = str(e.daemon.peer_id)
            # With an exit the PAC file sends every host through the proxy.
            status, pac, err = await curl(f"http://{a.proxy}/proxy.pac")
            assert status == 0 and b'"DIRECT"' not in pac, err

            # Another loopback address (not exempted), another port: refused, readable.
            status, out, err = await curl("-x", f"http://{a.proxy}",
                                          f"http://127.0.0.2:{port}/")
            assert status == 0 and b"403" in out and b"loopback" in out, out
            status, out, err = await curl("-x", f"http://{a.proxy}",
                                          f"http://127.0.0.1:{other_port}/")
            assert status == 0 and b"403" in out and b"that port" in out, out
            status, out, err = await curl("--socks5-hostname", a.proxy,
                                          f"http://localhost:{other_port}/")
            assert status == 97 and b"(2)" in err, err  # SOCKS5 reply 2: not allowed

            # b found the exit in the DHT (auto), which refuses it: not in the allowlist.
            status, out, err = await curl("-x", f"http://{b.proxy}", url)
            assert status == 0 and b"403" in out and b"allowlist" in out, out
            assert b.apps.exit_dialer is not None
            assert b.apps.exit_dialer.current is None

            limits = (await e.call("stats"))["limits"]
            assert limits["exit.destination_refused"] == 1
            assert limits["exit.port_refused"] == 2
            assert limits["exit.client_not_allowed"] == 1

            # Two connections per client: a third is refused while two are open.
            tunnels = [await _connect_tunnel(a.proxy, f"127.0.0.1:{port}") for _ in range(2)]
            try:
                assert all(t[2].startswith(b"HTTP/1.1 200") for t in tunnels)
                _, w3, head = await _connect_tunnel(a.proxy, f"127.0.0.1:{port}")
                w3.close()
                assert head.startswith(b"HTTP/1.1 403"), head
            finally:
                for _, writer, _ in tunnels:
                    writer.close()
            async with server.released:
                await server.released.wait_for(lambda: server.book.open == 0)
            assert (await e.call("stats"))["limits"]["exit.connections_per_client"] == 1

            # 400 kB per client: a 1 MiB download is cut off, later requests refused.
            status, out, err = await curl("-x", f"http://{a.proxy}",
                                          f"http://127.0.0.1:{port}/big.bin")
            assert status != 0 and len(out) < BIG
            status, out, err = await curl("-x", f"http://{a.proxy}", url)
            assert b"403" in out and b"limit" in out, out
            stats = await e.call("stats")
            assert stats["limits"]["exit.bytes_per_client"] == 2
            assert stats["exit"]["clients"][a_id]["bytes"] > 400_000
            refused: dict[str, Any] = stats["exit"]["refused"]
            assert refused["limit"] == 3 and refused["not_allowed"] == 1  # 1 + 2 above
