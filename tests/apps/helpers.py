"""Real daemons in-process (as tests/namenet), an HTTP server on a
loopback port, and curl run without blocking the event loop."""

from __future__ import annotations

import asyncio
import functools
import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlay.apps.daemon_ext import AppsExtension
from overlay.daemon.client import ApiClient
from overlay.daemon.config import DaemonConfig
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.daemon.ops_name import naming_extensions
from tests.namenet.helpers import FAST_HOST, FAST_KAD, FAST_NAMES, LOOPBACK


@dataclass
class Node:
    daemon: Daemon
    apps: AppsExtension

    async def call(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        async with await ApiClient.connect(self.daemon.api_path) as api:
            return await api.call(op, args)

    @property
    def proxy(self) -> str:
        assert self.apps.proxy_address is not None
        host, port = self.apps.proxy_address
        return f"{host}:{port}"


@asynccontextmanager
async def node(root: Path, bootstrap: tuple[str, ...] = (), *,
               proxy: bool = False) -> AsyncIterator[Node]:
    home = Home(root)
    config = DaemonConfig(listen=(LOOPBACK,), bootstrap=bootstrap)
    key = init_home(home, config).key
    dht, names = naming_extensions(key, dns=None, names=FAST_NAMES, kad=FAST_KAD)
    apps = AppsExtension({}, ("127.0.0.1", 0) if proxy else None)
    async with Daemon(home, config, key, host_config=FAST_HOST,
                      extensions=[dht, names, apps]) as d:
        if bootstrap:
            assert dht.kad is not None
            await dht.kad.bootstrapped.wait()
        yield Node(d, apps)


@asynccontextmanager
async def network(root: Path) -> AsyncIterator[tuple[Node, Node]]:
    """An introducer, ``a`` with a proxy, and ``b``; yields (a, b)."""
    async with AsyncExitStack() as stack:
        intro = await stack.enter_async_context(node(root / "i"))
        boot = (intro.daemon.full_addrs()[0],)
        a = await stack.enter_async_context(node(root / "a", boot, proxy=True))
        b = await stack.enter_async_context(node(root / "b", boot))
        yield a, b


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def http_server(directory: Path) -> Iterator[int]:
    """``python -m http.server``'s handler on 127.0.0.1, port 0; yields the port."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="test http server")
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def curl(*args: str, timeout: float = 60.0) -> tuple[int, bytes, bytes]:
    """(exit status, stdout, stderr) of curl; it never touches the network
    beyond the loopback proxy given in ``args``."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--show-error", "--noproxy", "", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err
