"""``overlay daemon --tun``: the virtual-IP interface inside the daemon.

``VipExtension`` opens ``ovl0``, runs the forwarding service on the host,
makes the DNS front answer A/AAAA for names with the virtual addresses of
the peer a name points at, adds ``vip4``/``vip6`` to ``name_resolve`` and
serves the ``vip_status`` op.  It must come after the naming extension.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from multiaddr import Multiaddr

from overlay.daemon.api import ApiCall
from overlay.identity import PeerId
from overlay.naming.record import NameRecord
from overlay.errors import DecodeError
from overlay.vip.router import VipRouter
from overlay.vip.service import FindPeer, VipService
from overlay.vip.tun import TunDevice

__all__ = ["VipExtension"]

log = logging.getLogger(__name__)


def target_peer(record: NameRecord) -> PeerId | None:
    """The peer a name's virtual addresses stand for: the first peer the
    record names (None if it names none, or an unreadable one)."""
    for target in record.peers:
        try:
            return PeerId.from_bytes(target.peer_id)
        except DecodeError:
            continue
    return None


class VipExtension:
    """``Daemon(..., extensions=[..., naming, VipExtension()])``."""

    def __init__(self, interface: str = "ovl0") -> None:
        self.interface = interface
        self.service: VipService | None = None
        self.device: TunDevice | None = None

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[VipService]:
        return self._run(daemon)

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[VipService]:
        host = daemon.host
        router = VipRouter(host.peer_id)
        device = TunDevice(self.interface, router.vip6)
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
        peer = target_peer(record)
        if service is None or peer is None:
            return None, None
        v4, v6 = service.router.addresses_of(peer, time.monotonic())
        return (None if v4 is None else v4.packed), v6.packed

    def _fields(self, record: NameRecord) -> Mapping[str, Any]:
        service = self.service
        peer = target_peer(record)
        if service is None or peer is None:
            return {"vip4": None, "vip6": None}
        v4, v6 = service.router.addresses_of(peer, time.monotonic())
        return {"vip4": None if v4 is None else str(v4), "vip6": str(v6)}

    async def _status(self, call: ApiCall) -> Mapping[str, Any]:
        service = self.service
        device = self.device
        if service is None or device is None:
            return {"running": False}
        return {
            "running": True,
            "interface": self.interface,
            "vip4": "100.64.0.1",
            "vip6": str(service.router.vip6),
            "vip4_table": len(service.router.allocator),
            "packets": dict(service.counts),
            "drops": dict(service.router.drops),
            "tun_written": device.written,
            "tun_write_drops": device.write_drops,
        }


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
