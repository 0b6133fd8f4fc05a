"""A running node: host + API server, as one async context manager.

``async with Daemon(home, config, key) as daemon:`` claims the API socket,
binds every listen address and serves the API; leaving it stops the API
first (its ops use the host), then the host.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Protocol

from multiaddr import Multiaddr

from overlay.daemon.api import ApiServer, ApiServerConfig
from overlay.daemon.config import DaemonConfig
from overlay.daemon.errors import DaemonError, ListenFailed
from overlay.daemon.home import Home
from overlay.daemon.memory import MemoryReturner
from overlay.daemon.ops import NodeOps, NodeOpsConfig, full_addrs
from overlay.daemon.ops_admin import AdminOps
from overlay.errors import TransportError
from overlay.host.config import HostConfig
from overlay.host.host import Host
from overlay.identity import PeerId, PrivateKey

__all__ = ["Daemon", "DaemonExtension"]

log = logging.getLogger(__name__)


def _listen_error(addr: str, exc: BaseException) -> ListenFailed:
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
        why = "the port is already in use (another daemon? pick another port or use port 0)"
    elif isinstance(cause, OSError) and cause.errno == errno.EADDRNOTAVAIL:
        why = "this machine has no such address"
    elif isinstance(cause, OSError) and cause.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
    elif isinstance(cause, OSError):
        why = cause.strerror or str(cause)
    else:
        why = str(exc)
    return ListenFailed(f"cannot listen on {addr}: {why}")


def _ipv6_disabled(addr: str, exc: BaseException) -> bool:
    """True when the IPv6 wildcard cannot be bound because the machine has
    no IPv6 at all: the default config must still start there."""
    if not addr.startswith("/ip6/::/"):
        return False
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    return isinstance(cause, OSError) and cause.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)


class DaemonExtension(Protocol):
    """A subsystem that runs inside the daemon (the DHT, naming, DNS …).

    Called once the host listens; the returned context manager registers the
    subsystem's ops (``daemon.api.register("dht_get", …)``) and host
    handlers on entry and stops its tasks on exit.  Extensions stop in
    reverse order, after the API has stopped serving and before the host.
    """

    def __call__(self, daemon: Daemon) -> AbstractAsyncContextManager[object]: ...


class Daemon:
    """The node behind ``overlay daemon``."""

    def __init__(
        self,
        home: Home,
        config: DaemonConfig,
        key: PrivateKey,
        *,
        host_config: HostConfig | None = None,
        api_config: ApiServerConfig | None = None,
        ops_config: NodeOpsConfig | None = None,
        extensions: Sequence[DaemonExtension] = (),
        stop: asyncio.Event | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self._key = key
        self.host = Host(key, host_config or HostConfig())
        self.api = ApiServer(home.api_socket(config.api_socket), api_config)
        self.ops = NodeOps(self.host, ops_config, zone=config.zone)
        self.ops.register(self.api)
        self.stop_requested = stop or asyncio.Event()
        """Set to ask whoever runs the daemon to stop it (the ``stop`` op, signals)."""
        AdminOps(self, self.stop_requested.set).register(self.api)
        self._extensions = tuple(extensions)
        self._stack: AsyncExitStack | None = None
        self.memory = MemoryReturner()
        """Hands freed heap back to the system after a burst (``overlay stats``)."""

    @property
    def peer_id(self) -> PeerId:
        return self.host.peer_id

    @property
    def extensions(self) -> tuple[DaemonExtension, ...]:
        return self._extensions

    @property
    def api_path(self) -> Path:
        return self.api.path

    def listen_addrs(self) -> list[Multiaddr]:
        return self.host.listen_addrs()

    def full_addrs(self) -> list[str]:
        """Listen addresses with ``/p2p/<peer id>``, as peers dial them."""
        return full_addrs(self.host.listen_addrs(), self.host.peer_id)

    async def __aenter__(self) -> Daemon:
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(self.host)
            await stack.enter_async_context(self.memory)
            # Claim the socket before binding ports: a second daemon on the
            # same home should hear "already running", not "port in use".
            await stack.enter_async_context(self.api)
            bound = 0
            for addr in self.config.listen:
                try:
                    await self.host.listen([addr])
                except (OSError, TransportError) as exc:
                    error = _listen_error(addr, exc)
                    if _ipv6_disabled(addr, exc):
                        log.warning("%s; IPv6 seems disabled here, continuing without it", error)
                        continue
                    raise error from exc
                bound += 1
            if not bound:
                raise ListenFailed("no listen address could be bound")
            for extension in self._extensions:
                await stack.enter_async_context(extension(self))
            # Runs first on exit: no API request may reach a stopped extension.
            stack.push_async_callback(self.api.close)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            raise DaemonError("daemon was not started")
        await stack.aclose()
