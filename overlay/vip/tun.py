"""The TUN device ``ovl0``: open it, give it the virtual addresses and
routes, and move packets between it and the event loop.

Opening uses the kernel's ``TUNSETIFF`` ioctl on ``/dev/net/tun`` (no
packet-information header); addresses, routes and the MTU are set over
netlink with pyroute2.  Needs root (``CAP_NET_ADMIN``).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import ipaddress
import logging
import os
import struct
from collections.abc import Callable

from overlay.errors import ConfigError
from overlay.vip.addressing import MAX_PACKET, SELF_V4, ULA_PREFIX, V4_NETWORK

__all__ = ["TunDevice", "TunError"]

log = logging.getLogger(__name__)

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_IFA_F_NODAD = 0x02
_READ_BATCH = 64


class TunError(ConfigError):
    """The TUN device cannot be created or configured."""


class TunDevice:
    """One TUN interface, open and configured.

    ``start(on_packet)`` calls ``on_packet`` with every packet the kernel
    routes into the interface; ``write`` hands a packet to the kernel.
    """

    def __init__(self, name: str, vip6: ipaddress.IPv6Address, *, mtu: int = 1280,
                 v4_mtu: int = 1136) -> None:
        if not 1 <= len(name.encode()) < 16:
            raise TunError(f"interface name {name!r} must be 1 to 15 bytes")
        if mtu < 1280:
            raise TunError("the MTU must be at least 1280 (IPv6's minimum)")
        self.name = name
        self.vip6 = vip6
        self.mtu = mtu
        self.v4_mtu = min(v4_mtu, mtu)
        self.ipv6 = True
        """False once IPv6 turned out to be disabled on the interface."""
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.written = 0
        self.write_drops = 0

    async def open(self) -> None:
        """Create the interface, set its addresses and routes, bring it up."""
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TunError(f"cannot open /dev/net/tun: {exc.strerror or exc}") from exc
        try:
            fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", self.name.encode(),
                                                    _IFF_TUN | _IFF_NO_PI))
            await self._configure()
        except (OSError, TunError) as exc:
            os.close(fd)
            if isinstance(exc, TunError):
                raise
            raise TunError(f"cannot create {self.name}: {exc.strerror or exc}"
                           " (root or CAP_NET_ADMIN needed)") from exc
        self._fd = fd

    async def _configure(self) -> None:
        from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped]
        from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

        try:
            async with AsyncIPRoute() as ipr:
                index = (await ipr.link_lookup(ifname=self.name))[0]
                await ipr.link("set", index=index, mtu=self.mtu)
                await ipr.addr("add", index=index, address=str(SELF_V4), prefixlen=32)
                await ipr.link("set", index=index, state="up")
                # IPv4 packets up to v4_mtu fit in one QUIC DATAGRAM frame on a
                # 1200-byte path; TCP picks its segment size from this MTU.
                await ipr.route("replace", dst=str(V4_NETWORK), oif=index,
                                prefsrc=str(SELF_V4), metrics={"mtu": self.v4_mtu})
                try:
                    await ipr.addr("add", index=index, address=str(self.vip6), prefixlen=128,
                                   flags=_IFA_F_NODAD)
                    # IPv6 links carry 1280 bytes at least, so the route MTU
                    # stays; advmss keeps TCP segments within one datagram.
                    await ipr.route("replace", dst=str(ULA_PREFIX), oif=index, family=10,
                                    prefsrc=str(self.vip6),
                                    metrics={"advmss": self.v4_mtu - 60})
                except NetlinkError as exc:
                    # IPv6 disabled here (sysctl disable_ipv6): IPv4 only.
                    self.ipv6 = False
                    log.warning("%s: no IPv6 virtual address (%s); IPv4 only", self.name, exc)
        except (NetlinkError, IndexError, OSError) as exc:
            raise TunError(f"cannot configure {self.name}: {exc}") from exc

    def start(self, on_packet: Callable[[bytes], None]) -> None:
        fd = self._require_fd()
        self._loop = asyncio.get_running_loop()

        def readable() -> None:
            for _ in range(_READ_BATCH):
                try:
                    packet = os.read(fd, MAX_PACKET)
                except BlockingIOError:
                    return
                except OSError as exc:
                    log.warning("reading %s failed: %s", self.name, exc)
                    return
                if not packet:
                    return
                on_packet(packet)

        self._loop.add_reader(fd, readable)

    def write(self, packet: bytes) -> None:
        """Give ``packet`` to the kernel; dropped if the device is busy."""
        fd = self._fd
        if fd is None:
            return
        try:
            os.write(fd, packet)
            self.written += 1
        except OSError as exc:
            # EAGAIN: the kernel's queue is full; EINVAL: a packet it refuses.
            self.write_drops += 1
            if exc.errno not in (errno.EAGAIN, errno.EINVAL):
                log.debug("writing to %s failed: %s", self.name, exc)

    def close(self) -> None:
        """Close the device: the kernel removes the interface with it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(fd)
        os.close(fd)

    def _require_fd(self) -> int:
        if self._fd is None:
            raise TunError(f"{self.name} is not open")
        return self._fd
