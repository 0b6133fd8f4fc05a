"""The asyncio side of mDNS discovery: zeroconf announcing our TXT record
and browsing ``_p2p._udp.local``.

zeroconf attaches to the running event loop (no thread) and starts its own
tasks: the announcement broadcasts that register/update return, the
browser's query sender, the engine's setup.  ``MdnsService`` owns them:
the broadcasts it awaits, the browser it cancels, and leaving the ``async
with`` sends goodbyes (bounded by ``shutdown_timeout``), closes zeroconf and
then cancels and awaits any zeroconf task still alive, so nothing of it
outlives the daemon.

mDNS runs only on the non-loopback IPs the node listens on
(``mdns_addresses``); a node listening on loopback only opens no mDNS
socket at all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from multiaddr import Multiaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from overlay.errors import OverlayError
from overlay.identity import PeerId
from overlay.mdns.config import MdnsConfig, mdns_addresses
from overlay.mdns.records import (
    SERVICE_TYPE,
    Announcement,
    MdnsDecodeError,
    Sighting,
    build_announcement,
    parse_txt,
    random_peer_name,
)
from overlay.multiaddrs import parse_quic_multiaddr
from overlay.supervisor import RestartPolicy, Supervisor, run_supervised

__all__ = ["MdnsService", "zeroconf_tasks"]

log = logging.getLogger(__name__)

_ZEROCONF_DIR = os.sep + "zeroconf" + os.sep
_TYPE_TXT = 16  # RFC 1035
_CLASS_IN = 1


def zeroconf_tasks() -> list[asyncio.Task[Any]]:
    """Tasks of the running loop whose coroutine is zeroconf's code."""
    out = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        filename = getattr(code, "co_filename", "") or ""
        if _ZEROCONF_DIR in filename:
            out.append(task)
    return out


def _ip_version(ips: Sequence[str]) -> IPVersion:
    v6 = [ip for ip in ips if ":" in ip]
    if not v6:
        return IPVersion.V4Only
    return IPVersion.V6Only if len(v6) == len(ips) else IPVersion.All


class MdnsService:
    """Announce ``peer_id`` at ``listen_addrs()`` and report what others
    announce: ``on_found(instance_name, sighting)`` for a new or changed
    peer, ``on_gone(instance_name)`` for a goodbye or expiry."""

    def __init__(
        self,
        peer_id: PeerId,
        listen_addrs: Callable[[], Sequence[Multiaddr]],
        on_found: Callable[[str, Sighting], None],
        on_gone: Callable[[str], None],
        config: MdnsConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or MdnsConfig()
        self._peer_id = peer_id
        self._listen_addrs = listen_addrs
        self._on_found = on_found
        self._on_gone = on_gone
        self.peer_name = random_peer_name(rng or random.Random())
        """Our instance label: random, 32–63 characters, not the peer ID."""
        self.interfaces: list[str] = []
        """The IPs mDNS runs on; empty when mDNS is not running."""
        self.announcement: Announcement | None = None
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._registered = False
        self._queue: asyncio.Queue[str] = asyncio.Queue(self.config.max_pending)
        self._sup: Supervisor | None = None

    @property
    def instance_name(self) -> str:
        return f"{self.peer_name}.{SERVICE_TYPE}"

    @property
    def active(self) -> bool:
        return self._azc is not None

    async def __aenter__(self) -> MdnsService:
        self.interfaces = mdns_addresses(self._listen_addrs())
        if not self.interfaces:
            log.info("mDNS off: the node listens on no address outside loopback")
            return self
        try:
            self._azc = AsyncZeroconf(interfaces=list(self.interfaces),
                                      ip_version=_ip_version(self.interfaces))
            self._browser = AsyncServiceBrowser(self._azc.zeroconf, SERVICE_TYPE,
                                                handlers=[self._on_change])
            sup = self._sup = await Supervisor("mDNS", log).__aenter__()
            # A bug in a loop restarts it after back-off; mDNS stays on.
            sup.spawn(self._announce_loop, "mDNS announcer", restart=RestartPolicy())
            sup.spawn(self._resolve_loop, "mDNS resolver", restart=RestartPolicy())
        except BaseException:
            await self._close()
            raise
        log.info("mDNS on %s as %s", ", ".join(self.interfaces), self.peer_name)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._close()

    # -- zeroconf callbacks (on the loop) ----------------------------------------

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if name.lower() == self.instance_name.lower():
            return
        if state_change is ServiceStateChange.Removed:
            self._on_gone(name)
            return
        try:
            self._queue.put_nowait(name)
        except asyncio.QueueFull:
            log.debug("mDNS: %d announcements pending, dropping %s", self._queue.qsize(), name)

    # -- our tasks -------------------------------------------------------------

    def _service_info(self, addrs: Sequence[Multiaddr]) -> AsyncServiceInfo:
        announcement = build_announcement(self._peer_id, addrs)
        self.announcement = announcement
        for skipped in announcement.skipped:
            log.info("mDNS: %s does not fit the TXT record; not announced", skipped)
        port = 4001  # the SRV record needs one; libp2p reads only the TXT record
        for addr in addrs:
            try:
                port = parse_quic_multiaddr(addr).port
                break
            except OverlayError:
                continue
        return AsyncServiceInfo(
            SERVICE_TYPE, self.instance_name, port=port, properties=announcement.rdata(),
            server=f"{self.peer_name}.local.", parsed_addresses=list(self.interfaces))

    def _announced_addrs(self) -> list[Multiaddr]:
        """Listen addresses on the mDNS interfaces (loopback is useless to others)."""
        chosen = set(self.interfaces)
        out = []
        for addr in self._listen_addrs():
            try:
                host = parse_quic_multiaddr(addr).host
            except OverlayError:
                continue
            if host in chosen:
                out.append(addr)
        return out

    async def _await_zeroconf(self, pending: Awaitable[object]) -> None:
        # register/update/unregister return zeroconf's broadcast task: ours to await.
        await pending

    async def _announce_loop(self) -> None:
        azc = self._azc
        assert azc is not None
        self._info = self._service_info(self._announced_addrs())
        await self._await_zeroconf(await azc.async_register_service(self._info))
        self._registered = True
        while True:
            await asyncio.sleep(self.config.address_check_interval)
            await self._maybe_reannounce(azc)

    async def _maybe_reannounce(self, azc: AsyncZeroconf) -> None:
        interfaces = mdns_addresses(self._listen_addrs())
        if not interfaces:
            return  # keep what we had: unbinding the last interface ends with the daemon
        if interfaces != self.interfaces:
            self.interfaces = interfaces
            update_interfaces = getattr(azc, "async_update_interfaces", None)
            if update_interfaces is not None:
                await update_interfaces(interfaces=list(interfaces),
                                        ip_version=_ip_version(interfaces))
        info = self._service_info(self._announced_addrs())
        old = self._info
        if old is not None and old.text == info.text and old.addresses == info.addresses:
            return
        log.info("mDNS: listen addresses changed, announcing again")
        self._info = info
        await self._await_zeroconf(await azc.async_update_service(info))

    async def _resolve_loop(self) -> None:
        while True:
            name = await self._queue.get()
            await run_supervised(self._resolve(name), f"mDNS resolve {name}", log)

    def _cached_txt(self, zc: Zeroconf, name: str) -> bytes:
        # rust and js-libp2p send one TXT record per address under the same
        # name; a ServiceInfo keeps only one of them, the cache has them all.
        records = zc.cache.get_all_by_details(name, _TYPE_TXT, _CLASS_IN)
        return b"".join(text for text in (getattr(r, "text", b"") for r in records)
                        if isinstance(text, bytes))

    async def _resolve(self, name: str) -> None:
        azc = self._azc
        assert azc is not None
        # The TXT records usually came with the PTR that announced the name.
        rdata = self._cached_txt(azc.zeroconf, name)
        if not rdata:
            # A rust-libp2p responder sends PTR and TXT only, so this request
            # "fails" for want of SRV/A even when the TXT record came.
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            await info.async_request(azc.zeroconf, self.config.resolve_timeout * 1000)
            rdata = self._cached_txt(azc.zeroconf, name) or info.text
        if not rdata:
            log.debug("mDNS: %s sent no TXT record", name)
            return
        try:
            sighting = parse_txt(rdata, self._peer_id)
        except MdnsDecodeError as exc:
            log.debug("mDNS: %s: %s", name, exc)
            return
        if sighting is not None:
            self._on_found(name, sighting)

    # -- shutdown ----------------------------------------------------------------

    async def _close(self) -> None:
        azc, self._azc = self._azc, None
        browser, self._browser = self._browser, None
        sup, self._sup = self._sup, None
        try:
            if browser is not None:
                await browser.async_cancel()
            if sup is not None:
                await sup.aclose()
            if azc is not None:
                try:
                    async with asyncio.timeout(self.config.shutdown_timeout):
                        if self._registered and self._info is not None:
                            await self._await_zeroconf(
                                await azc.async_unregister_service(self._info))
                        await azc.async_close()
                except TimeoutError:
                    log.warning("mDNS: goodbye did not finish in %.1f s",
                                self.config.shutdown_timeout)
                    azc.zeroconf.close()  # no goodbye then, but the sockets must go
        finally:
            self._registered = False
            await self._reap()

    async def _reap(self) -> None:
        leftover = [task for task in zeroconf_tasks() if task is not asyncio.current_task()]
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.wait(leftover, timeout=self.config.shutdown_timeout)
