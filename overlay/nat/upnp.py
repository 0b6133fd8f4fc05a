"""UPnP IGD port mapping, the asyncio driver over async-upnp-client: find
the IGD with an SSDP search bound to the LAN address, read its external IP,
map the QUIC UDP port with a lease, renew it at half the lease (the
schedule is ``upnp_core.LeaseSchedule``), delete it on shutdown.

Whether this runs at all is ``upnp_core.decide`` (docs/nat.md, "UPnP"):
nothing here is called for a node listening on loopback only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
from async_upnp_client.aiohttp import AiohttpRequester
from async_upnp_client.client_factory import UpnpFactory
from async_upnp_client.exceptions import UpnpError as LibUpnpError
from async_upnp_client.profiles.igd import IgdDevice
from async_upnp_client.search import SsdpSearchListener

from overlay.errors import OverlayError
from overlay.nat.upnp_core import (LeaseSchedule, Mapping, UpnpConfig, is_lan_ipv4,
                                   parse_proc_route)
from overlay.supervisor import Supervisor

__all__ = ["UpnpError", "IgdNotFound", "IgdCallFailed", "Igd", "discover_igd",
           "default_gateway", "PortMapper"]

log = logging.getLogger(__name__)

IGD_SEARCH_TARGET = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"


class UpnpError(OverlayError):
    """A UPnP step failed; the mapper retries after back-off."""


class IgdNotFound(UpnpError):
    """No IGD answered the SSDP search in time (or none worth trusting)."""


class IgdCallFailed(UpnpError):
    """The IGD refused a call or could not be reached over HTTP."""


def default_gateway(route_file: Path = Path("/proc/net/route")) -> str | None:
    """The default route's next hop in this network namespace, if any."""
    try:
        return parse_proc_route(route_file.read_text())
    except OSError:
        return None


async def discover_igd(lan_ip: str, timeout: float) -> str:
    """The description URL of the first IGD that answers an M-SEARCH sent
    from ``lan_ip``; ``IgdNotFound`` after ``timeout`` seconds.  Only an IGD
    whose URL is on an RFC 1918 address counts: a home router's is."""
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_response(headers: Any) -> None:
        location = str(headers.get("location", ""))
        if is_lan_ipv4(urlparse(location).hostname or "") and not found.done():
            found.set_result(location)

    listener = SsdpSearchListener(callback=on_response, source=(lan_ip, 0),
                                  timeout=max(1, int(timeout)), search_target=IGD_SEARCH_TARGET)
    try:
        await listener.async_start()
    except OSError as exc:
        raise IgdNotFound(f"cannot search from {lan_ip}: {exc}") from exc
    try:
        listener.async_search()
        async with asyncio.timeout(timeout):
            return await found
    except TimeoutError:
        raise IgdNotFound(f"no IGD answered from {lan_ip} within {timeout:g} s") from None
    finally:
        listener.async_stop()


class Igd:
    """One IGD's WANIPConnection service, each call bounded and its
    library failures turned into ``IgdCallFailed``."""

    def __init__(self, device: IgdDevice, call_timeout: float) -> None:
        self._device = device
        self._timeout = call_timeout

    @classmethod
    async def open(cls, location: str, call_timeout: float) -> Igd:
        factory = UpnpFactory(AiohttpRequester(timeout=max(1, int(call_timeout))))
        try:
            async with asyncio.timeout(call_timeout):
                device = await factory.async_create_device(location)
        except (LibUpnpError, aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise IgdCallFailed(f"reading {location}: {exc!r}") from exc
        return cls(IgdDevice(device, None), call_timeout)

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await coro
        except (LibUpnpError, aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise IgdCallFailed(f"{what}: {exc!r}") from exc

    async def external_ip(self) -> str:
        ip = await self._call("GetExternalIPAddress", self._device.async_get_external_ip_address())
        if not ip:
            raise IgdCallFailed("GetExternalIPAddress returned no address")
        try:
            ipaddress.IPv4Address(ip)
        except ValueError as exc:
            raise IgdCallFailed(f"GetExternalIPAddress returned {ip!r}") from exc
        return str(ip)

    async def add_udp(self, external_port: int, internal_ip: str, internal_port: int,
                      lease: float, description: str) -> None:
        await self._call("AddPortMapping", self._device.async_add_port_mapping(
            remote_host=ipaddress.IPv4Address("0.0.0.0"), external_port=external_port,
            protocol="UDP", internal_port=internal_port,
            internal_client=ipaddress.IPv4Address(internal_ip), enabled=True,
            description=description, lease_duration=timedelta(seconds=int(lease))))

    async def delete_udp(self, external_port: int) -> None:
        await self._call("DeletePortMapping", self._device.async_delete_port_mapping(
            remote_host=ipaddress.IPv4Address("0.0.0.0"), external_port=external_port,
            protocol="UDP"))


Discover = Callable[[str, float], Any]
"""``discover_igd``'s shape; tests pass a fake to see it is never called."""


class PortMapper:
    """Keeps one UDP port mapped while ``async with`` lasts: ``mapping`` is
    the current one (None before the first success or after the lease ran
    out); leaving deletes it from the IGD."""

    def __init__(self, lan_ip: str, port: int, config: UpnpConfig, *,
                 discover: Discover = discover_igd,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lan_ip = lan_ip
        self.port = port
        self.config = config
        self._discover = discover
        self._clock = clock
        self.schedule = LeaseSchedule(config, clock())
        self._igd: Igd | None = None
        self.location: str | None = None
        self.attempts = 0
        self.attempted = asyncio.Event()
        """Set after each mapping attempt, success or failure (status waiters, tests)."""

    @property
    def mapping(self) -> Mapping | None:
        return self.schedule.current(self._clock())

    @asynccontextmanager
    async def running(self) -> AsyncIterator[PortMapper]:
        async with Supervisor("upnp", log) as jobs:
            jobs.spawn(self._loop, "upnp lease")
            try:
                yield self
            finally:
                await jobs.aclose()
                await self._unmap()

    async def _loop(self) -> None:
        while True:
            now = self._clock()
            if self.schedule.due(now):
                try:
                    mapping = await self.map_once()
                except UpnpError as exc:
                    self._igd = None  # rediscover next time: the router may have changed
                    self.schedule.on_failed(self._clock(), str(exc))
                    log.info("upnp: %s (retry in %.0f s)", exc,
                             self.schedule.next_deadline() - self._clock())
                else:
                    self.schedule.on_mapped(mapping)
                    log.info("upnp: mapped %s -> %s:%d for %.0f s", mapping.multiaddr,
                             self.lan_ip, self.port, mapping.lease)
                self.attempts += 1
                self.attempted.set()
            await asyncio.sleep(max(0.0, self.schedule.next_deadline() - self._clock()))

    async def map_once(self) -> Mapping:
        """Discover (once), then add or renew the mapping."""
        if self._igd is None:
            location = await self._discover(self.lan_ip, self.config.discovery_timeout)
            self._igd = await Igd.open(location, self.config.call_timeout)
            self.location = location
        igd = self._igd
        external_ip = await igd.external_ip()
        await igd.add_udp(self.port, self.lan_ip, self.port, self.config.lease,
                          self.config.description)
        return Mapping(external_ip, self.port, self.lan_ip, self.port, self.config.lease,
                       self._clock())

    async def _unmap(self) -> None:
        igd, mapping = self._igd, self.schedule.mapping
        if igd is None or mapping is None:
            return
        try:
            await igd.delete_udp(mapping.external_port)
        except UpnpError as exc:
            log.info("upnp: could not delete the mapping: %s", exc)
        else:
            log.info("upnp: deleted %s", mapping.multiaddr)
        self.schedule.mapping = None
