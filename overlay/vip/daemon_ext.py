"""``overlay daemon --tun``: the virtual-IP interface inside the daemon.

``VipExtension`` opens ``ovl0``, runs the forwarding service on the host,
makes the DNS front answer A/AAAA for names with the virtual addresses of
the peer a name points at, adds ``vip4``/``vip6`` to ``name_resolve`` and
serves the ``vip_status`` op.  It must come after the naming extension.
The IPv4 table is kept in ``<home>/vip4.json`` (``overlay.vip.persist``)
so that a restart gives every peer the address it had.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from multiaddr import Multiaddr

from overlay.daemon.api import ApiCall
from overlay.identity import PeerId
from overlay.naming.record import NameRecord
from overlay.statefile import Snapshot, StateWriter
from overlay.vip.addressing import Ipv4Allocator, vip6_of
from overlay.vip.names import record_vips, target_peer
from overlay.vip.persist import TABLE_FILE, TABLE_FORMAT, TABLE_VERSION, load_table, table_body
from overlay.vip.router import VipRouter
from overlay.vip.service import FindPeer, VipService
from overlay.vip.tun import TunDevice

__all__ = ["VipExtension", "Device", "DeviceFactory", "target_peer"]

log = logging.getLogger(__name__)


class Device(Protocol):
    """What the extension needs of ``TunDevice`` (tests give a memory one)."""

    written: int
    write_drops: int

    async def open(self) -> None: ...

    def start(self, on_packet: Callable[[bytes], None]) -> None: ...

    def write(self, packet: bytes) -> None: ...

    def close(self) -> None: ...


DeviceFactory = Callable[[str, ipaddress.IPv6Address], Device]

MAX_STATUS_PEERS = 1024
"""Peers listed by ``vip_status`` at most (connected ones first)."""

_QUEUE_DROPS = {
    "dropped_datagram_queue": "datagram queue full",
    "dropped_stream_queue": "stream queue full",
    "dropped_links_full": "too many streams",
    "dropped_unreachable": "peer unreachable",
    "dropped_stream_error": "stream failed",
}


class VipExtension:
    """``Daemon(..., extensions=[..., naming, VipExtension()])``."""

    def __init__(self, interface: str = "ovl0", *, device: DeviceFactory | None = None,
                 persist: bool = True) -> None:
        """``device`` makes the interface (``TunDevice`` by default);
        ``persist`` keeps the IPv4 table in ``<home>/vip4.json``."""
        self.interface = interface
        self.service: VipService | None = None
        self.device: Device | None = None
        self.writer: StateWriter | None = None
        self._make_device: DeviceFactory = device or TunDevice
        self._persist = persist

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[VipService]:
        return self._run(daemon)

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[VipService]:
        host = daemon.host
        allocator = Ipv4Allocator()
        async with AsyncExitStack() as stack:
            if self._persist:
                directory = Path(daemon.home.root)
                saved = await asyncio.to_thread(load_table, directory)
                allocator.restore(saved, time.monotonic())
                if saved:
                    log.info("%d of %d saved vIPv4 addresses restored", len(allocator),
                             len(saved))
                writer = StateWriter(
                    Snapshot(directory / TABLE_FILE, TABLE_FORMAT, TABLE_VERSION,
                             lambda: table_body(allocator.entries())),
                    "vIPv4 table", interval=1.0)
                # Entered before the service, so it writes the last change at exit.
                self.writer = await stack.enter_async_context(writer)
                allocator.on_change = writer.mark_dirty
            async with self._running(daemon, host, VipRouter(host.peer_id, allocator)) as service:
                yield service

    @asynccontextmanager
    async def _running(self, daemon: Any, host: Any,
                       router: VipRouter) -> AsyncIterator[VipService]:
        device = self._make_device(self.interface, router.vip6)
        await device.open()
        self.device = device
        name_ext = _naming_of(daemon)
        try:
            async with VipService(host, router, device, find_peer=_find_peer_of(daemon)) as service:
                self.service = service
                device.start(service.from_tun)
                daemon.api.register("vip_status", self._status)
                front = getattr(name_ext, "dns_front", None)
                ops = getattr(name_ext, "name_ops", None)
                if front is not None:
                    front.address_hook = self._addresses
                if ops is not None:
                    ops.extra_fields = self._fields
                log.info("virtual IPs on %s: %s and %s (IPv4 handed out from 100.64.0.0/10)",
                         self.interface, router.vip6, "100.64.0.1")
                try:
                    yield service
                finally:
                    if front is not None:
                        front.address_hook = None
                    if ops is not None:
                        ops.extra_fields = None
        finally:
            self.service = None
            device.close()

    def _addresses(self, record: NameRecord) -> Sequence[bytes]:
        v4, v6 = self._vips(record)
        if v6 is None:
            return record.ips
        return tuple(ip for ip in (v4, v6) if ip is not None)

    def _vips(self, record: NameRecord) -> tuple[bytes | None, bytes | None]:
        service = self.service
        found = None if service is None else record_vips(service.router, record,
                                                         time.monotonic())
        if found is None:
            return None, None
        _, v4, v6 = found
        return (None if v4 is None else v4.packed), v6.packed

    def _fields(self, record: NameRecord) -> Mapping[str, Any]:
        service = self.service
        found = None if service is None else record_vips(service.router, record,
                                                         time.monotonic())
        if found is None:
            return {"vip4": None, "vip6": None}
        _, v4, v6 = found
        return {"vip4": None if v4 is None else str(v4), "vip6": str(v6)}

    async def _status(self, call: ApiCall) -> Mapping[str, Any]:
        service = self.service
        device = self.device
        if service is None or device is None:
            return {"running": False}
        peers, total = self._peers(service)
        drops: dict[str, int] = dict(service.router.drops)
        for key, reason in _QUEUE_DROPS.items():
            if service.counts[key]:
                drops[reason] = service.counts[key]
        if device.write_drops:
            drops["interface busy"] = device.write_drops
        return {
            "running": True,
            "interface": self.interface,
            "vip4": "100.64.0.1",
            "vip6": str(service.router.vip6),
            "vip4_table": len(service.router.allocator),
            "peers": peers,
            "peers_total": total,
            "packets": dict(service.counts),
            "bytes": dict(service.byte_counts),
            "drops": drops,
            "tun_written": device.written,
            "tun_write_drops": device.write_drops,
        }

    def _peers(self, service: VipService) -> tuple[list[dict[str, Any]], int]:
        """Connected peers first, then the rest of the IPv4 table (most
        recently used first), each with its addresses and its path now."""
        host = service.host
        table = {peer: address for peer, address in service.router.allocator.entries()}
        connected = list(dict.fromkeys(conn.remote_peer for conn in host.connections()
                                       if not conn.is_closed))
        seen = set(connected)
        rest = [peer for peer in reversed(table) if peer not in seen]
        out = []
        listed = connected + rest
        # Only those shown are looked at (a hash each for the vIPv6).
        for peer in listed[:MAX_STATUS_PEERS]:
            v4 = table.get(peer)
            out.append({
                "peer_id": str(peer),
                "vip4": None if v4 is None else str(ipaddress.IPv4Address(v4)),
                "vip6": str(vip6_of(peer)),
                "path": service.path_to(peer),
            })
        return out, len(listed)


def _naming_of(daemon: Any) -> object | None:
    from overlay.daemon.ops_name import NameExtension

    for extension in daemon.extensions:
        if isinstance(extension, NameExtension):
            return extension
    return None


def _find_peer_of(daemon: Any) -> FindPeer | None:
    from overlay.daemon.ops_dht import DhtExtension

    dht = next((e for e in daemon.extensions if isinstance(e, DhtExtension)), None)
    if dht is None:
        return None

    async def find_peer(peer: PeerId) -> list[Multiaddr]:
        if dht.kad is None:
            return []
        return await dht.kad.find_peer(peer)

    return find_peer
