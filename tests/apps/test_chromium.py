"""A real browser on the overlay: headless Chromium (Debian's ``chromium``)
configured only with the proxy's PAC URL loads ``http://alice.ovl/`` from
another daemon and a "clear web" page through an exit, and the test reads
both pages' DOM (``--dump-dom``) and saves screenshots in its temp dir.

The clear-web host is ``www.clear.test``, which only the exit's resolver
knows (a hosts mapping to 127.0.0.1, exempted by the test-only
``unsafe_lab_destinations``): Chromium never sends a loopback host such as
127.0.0.1 to a proxy, and a name that nothing else resolves proves the page
came through the exit, whose stats are checked too.  Chromium runs with
the flags that keep it off the internet and with a fresh profile."""

from __future__ import annotations

import asyncio
import functools
import http.server
import ipaddress
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from overlay.apps.daemon_ext import AppsExtension
from overlay.apps.exit_policy import ExitConfig, IPAddress
from overlay.daemon.config import DaemonConfig
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.daemon.ops_name import naming_extensions
from overlay.daemon.ops_stats import StatsExtension
from overlay.identity import PeerId, PrivateKey
from tests.apps.helpers import Node
from tests.namenet.helpers import FAST_HOST, FAST_KAD, FAST_NAMES, LOOPBACK

CHROMIUM = "/usr/bin/chromium"
CLEAR_HOST = "www.clear.test"
ALICE_PAGE = "<html><body><h1 id='who'>alice's page over the overlay</h1></body></html>\n"
CLEAR_PAGE = "<html><body><h1 id='who'>a clear-web page through the exit</h1></body></html>\n"
# What keeps Chromium off the internet (closed here anyway) and reproducible.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-breakpad",
                  "--disable-features=MediaRouter,OptimizationHints",
                  "--window-size=800,600",
                  # Its own resolver answers nothing (SOCKS5 leaves names to
                  # the proxy), so not even a DNS query leaves the machine.
                  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is absent (Debian package chromium)")


class _Recording(http.server.SimpleHTTPRequestHandler):
    """Serves the directory and records each request's Host header."""

    hosts: list[str]

    def do_GET(self) -> None:
        self.hosts.append(self.headers.get("Host", ""))
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def recording_server(directory: Path) -> Iterator[tuple[int, list[str]]]:
    """An HTTP server on 127.0.0.1 (port 0); yields its port and the Host
    headers of the requests it got."""
    hosts: list[str] = []
    handler = functools.partial(type("H", (_Recording,), {"hosts": hosts}),
                                directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="test http server")
    thread.start()
    try:
        yield server.server_address[1], hosts
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def lab_hosts(host: str, port: int) -> list[IPAddress]:
    """The exit's resolver: only the lab host; anything else fails, so
    nothing Chromium asks for ever reaches a real resolver."""
    if host == CLEAR_HOST:
        return [ipaddress.ip_address("127.0.0.1")]
    raise OSError(f"{host} is not in the test's hosts mapping")


def _home(root: Path) -> tuple[Home, PrivateKey]:
    home = Home(root)
    return home, init_home(home, DaemonConfig(listen=(LOOPBACK,))).key


@asynccontextmanager
async def _node(home: Home, key: PrivateKey, bootstrap: tuple[str, ...] = (), *,
                proxy: bool = False, exit: ExitConfig | None = None,
                exit_via: str = "off") -> AsyncIterator[Node]:
    config = DaemonConfig(listen=(LOOPBACK,), bootstrap=bootstrap)
    dht, names = naming_extensions(key, dns=None, names=FAST_NAMES, kad=FAST_KAD)
    apps = AppsExtension({}, ("127.0.0.1", 0) if proxy else None, persist=False,
                         exit=exit or ExitConfig(), exit_via=exit_via,
                         exit_resolve=lab_hosts)
    async with Daemon(home, config, key, host_config=FAST_HOST,
                      extensions=[dht, names, apps, StatsExtension()]) as d:
        if bootstrap:
            assert dht.kad is not None
            await dht.kad.bootstrapped.wait()
        yield Node(d, apps)


async def chromium(profile: Path, pac_url: str, *args: str, timeout: float = 90.0) -> bytes:
    """Run headless Chromium with a fresh profile and the PAC URL; its
    stdout.  Chromium's helpers share its process group, which is killed
    if it outlives ``timeout``."""
    profile.mkdir()
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
        f"--proxy-pac-url={pac_url}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True, env={**os.environ, "HOME": str(profile)})
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


async def test_chromium_loads_an_ovl_name_and_a_clear_web_page_through_an_exit(
        short_tmp: Path, tmp_path: Path) -> None:
    alice_site, clear_site = short_tmp / "alice-site", short_tmp / "clear-site"
    alice_site.mkdir()
    clear_site.mkdir()
    (alice_site / "index.html").write_text(ALICE_PAGE)
    (clear_site / "index.html").write_text(CLEAR_PAGE)
    homes = {n: _home(short_tmp / n) for n in ("i", "e", "alice", "a")}
    a_id = str(PeerId.from_public_key(homes["a"][1].public_key()))
    with recording_server(alice_site) as (alice_port, alice_hosts), \
            recording_server(clear_site) as (clear_port, clear_hosts):
        exit_config = ExitConfig(enabled=True, ports=(clear_port,), allow=(a_id,),
                                 unsafe_lab_destinations=("127.0.0.1/32",))
        async with asyncio.timeout(300), AsyncExitStack() as stack:
            intro = await stack.enter_async_context(_node(*homes["i"]))
            boot = (intro.daemon.full_addrs()[0],)
            e = await stack.enter_async_context(_node(*homes["e"], boot, exit=exit_config))
            assert e.apps.exit_server is not None
            await e.apps.exit_server.announced.wait()
            alice = await stack.enter_async_context(_node(*homes["alice"], boot))
            await alice.call("expose_add", {"service": "http", "port": alice_port})
            await alice.call("name_register", {"name": "alice.ovl"})
            a = await stack.enter_async_context(
                _node(*homes["a"], boot, proxy=True, exit_via=str(e.daemon.peer_id)))
            pac_url = f"http://{a.proxy}/proxy.pac"

            # http://alice.ovl/ from the daemon alice, by name.
            dom = await chromium(short_tmp / "profile-1", pac_url, "--dump-dom",
                                 "http://alice.ovl/")
            assert b"alice's page over the overlay" in dom, dom[-2000:]
            assert "alice.ovl" in alice_hosts  # the browser's Host header, through the overlay
            exposed = (await alice.call("expose_list"))["services"][0]
            assert exposed["service"] == "http" and exposed["connections"] >= 1

            # The clear-web page: only the exit can resolve its host.
            url = f"http://{CLEAR_HOST}:{clear_port}/"
            dom = await chromium(short_tmp / "profile-2", pac_url, "--dump-dom", url)
            assert b"a clear-web page through the exit" in dom, dom[-2000:]
            assert f"{CLEAR_HOST}:{clear_port}" in clear_hosts
            stats = await e.call("stats")
            assert stats["exit"]["clients"][a_id]["connections"] >= 1
            assert stats["exit"]["bytes_to_clients"] >= len(CLEAR_PAGE)
            assert a.apps.exit_dialer is not None and a.apps.exit_dialer.opened >= 1

            # Screenshots of both pages in the test's temp dir (pytest keeps it
            # for a look after the run; the daemons' dir is short for its sockets).
            for name, page in (("alice", "http://alice.ovl/"), ("clear", url)):
                shot = tmp_path / f"{name}.png"
                await chromium(short_tmp / f"profile-{name}", pac_url,
                               f"--screenshot={shot}", page)
                data = shot.read_bytes()
                assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
