"""mDNS inside the daemon: announce the node on the LAN, put the peers it
finds into the peerstore and dial them, one at a time, so identify tells
the DHT about them (kad adds peers that identify as DHT servers).

On unless the config says ``mdns = false`` (``overlay daemon --no-mdns``);
even then it runs only on non-loopback addresses the node listens on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

from overlay.errors import OverlayError
from overlay.host.events import HostListener
from overlay.identity import PeerId
from overlay.mdns.config import MdnsConfig
from overlay.mdns.driver import MdnsService
from overlay.mdns.records import Sighting
from overlay.mdns.table import DiscoveredPeer, DiscoveredPeers
from overlay.supervisor import RestartPolicy, Supervisor

__all__ = ["MdnsExtension"]

log = logging.getLogger(__name__)


class MdnsExtension:
    """A ``DaemonExtension``; ``enabled`` overrides the config's ``mdns`` key."""

    def __init__(self, config: MdnsConfig | None = None, *, enabled: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or MdnsConfig()
        self._enabled = enabled
        self._clock = clock
        self.table = DiscoveredPeers(self.config.table)
        self.service: MdnsService | None = None
        self.state = "stopped"
        """``on``, ``disabled`` (by config), ``loopback`` (nothing to run
        on) or ``stopped``."""
        self._wake = asyncio.Event()
        self.dials = 0
        """Dial attempts made so far."""

    def summary(self) -> str:
        """One line for ``overlay status``."""
        if self.state == "on":
            count = len(self.table)
            return f"on ({count} peer{'s' if count != 1 else ''} found)"
        if self.state == "loopback":
            return "off (listening on loopback only)"
        return "off"

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[MdnsExtension]:
        return self._run(daemon)

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[MdnsExtension]:
        enabled = self._enabled
        if enabled is None:
            enabled = bool(getattr(daemon.config, "mdns", True))
        if not enabled:
            self.state = "disabled"
            yield self
            return
        host = daemon.host

        def on_found(name: str, sighting: Sighting) -> None:
            host.peerstore.add_addrs(sighting.peer_id,
                                     [addr.to_multiaddr() for addr in sighting.addrs])
            if self.table.saw(name, sighting, self._clock()):
                log.info("mDNS found %s at %s", sighting.peer_id,
                         ", ".join(map(str, sighting.addrs)))
                self._wake.set()

        def on_gone(name: str) -> None:
            peer = self.table.gone(name)
            if peer is not None:
                log.info("mDNS: %s left", peer)

        def disconnected(peer: PeerId) -> None:
            self.table.set_connected(peer, False)

        listener = HostListener(disconnected=disconnected)
        service = MdnsService(host.peer_id, host.listen_addrs, on_found, on_gone, self.config)
        async with service:
            if not service.active:
                self.state = "loopback"
                try:
                    yield self
                finally:
                    self.state = "stopped"
                return
            self.service, self.state = service, "on"
            host.add_listener(listener)
            try:
                async with Supervisor("mDNS dialer", log) as sup:
                    sup.spawn(partial(self._dial_loop, host), "mDNS dialer",
                              restart=RestartPolicy())
                    yield self
            finally:
                host.remove_listener(listener)
                self.service, self.state = None, "stopped"

    async def _dial_loop(self, host: Any) -> None:
        while True:
            now = self._clock()
            self.table.expire(now)
            entry = self.table.next_dial(now)
            if entry is None:
                deadline = self.table.next_deadline()
                self._wake.clear()
                delay = None if deadline is None else max(0.0, deadline - now)
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            ok = await self._dial(host, entry)
            self.table.dial_finished(entry.peer_id, ok, self._clock())

    async def _dial(self, host: Any, entry: DiscoveredPeer) -> bool:
        if entry.peer_id in host.peers():
            return True
        for addr in entry.addrs:
            self.dials += 1
            try:
                async with asyncio.timeout(self.config.dial_timeout):
                    await host.connect(str(addr.with_peer_id(entry.peer_id)))
            except (OverlayError, OSError, TimeoutError) as exc:
                log.debug("mDNS: dial of %s at %s failed: %r", entry.peer_id, addr, exc)
                continue
            log.info("mDNS: connected to %s", entry.peer_id)
            return True
        return False
