"""The QUIC transport: the host's UDP endpoints behind the ``Transport`` interface.

One endpoint per listen address; dials leave from a listening endpoint of
the same family when there is one, so the remote sees (and a NAT maps) the
port we listen on, which hole punching needs.  Without one, a dial-only
endpoint is made on demand and kept.  Every endpoint accepts, dial-only
ones included (a punched hole lets peers in through them).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from multiaddr import Multiaddr

from overlay.errors import (
    DialError,
    InvalidMultiaddr,
    LimitExceeded,
    OverlayError,
    TransportError,
)
from overlay.host.addrs import expand_unspecified, is_ipv6, is_loopback
from overlay.host.transport_types import DIRECT, Connection, ConnectionOwner, Endpoint, Path
from overlay.identity import PeerId
from overlay.multiaddrs import QuicAddr, parse_quic_multiaddr

__all__ = ["EndpointFactory", "QuicTransport"]

log = logging.getLogger(__name__)

EndpointFactory = Callable[[str, int], Awaitable[Endpoint]]


class QuicTransport:
    """``/ip4|ip6|dns4|dns6/…/udp/N/quic-v1`` over the host's endpoints."""

    def __init__(self, owner: ConnectionOwner, endpoint_factory: EndpointFactory) -> None:
        self._owner = owner
        self._factory = endpoint_factory
        self._listen_endpoints: list[Endpoint] = []
        self._dial_endpoints: list[Endpoint] = []
        self._extra_endpoints: list[Endpoint] = []
        self._lock = asyncio.Lock()
        self._closing = False

    @property
    def path(self) -> Path:
        return DIRECT

    # -- addresses -------------------------------------------------------------

    @staticmethod
    def parse(addr: str | Multiaddr) -> QuicAddr:
        """The QUIC address (raises ``InvalidMultiaddr``)."""
        return parse_quic_multiaddr(addr)

    def can_dial(self, addr: Multiaddr) -> bool:
        try:
            parse_quic_multiaddr(addr)
        except InvalidMultiaddr:
            return False
        return True

    def can_listen(self, addr: Multiaddr) -> bool:
        return self.can_dial(addr)

    # -- listening -------------------------------------------------------------

    async def listen(self, addrs: Sequence[Multiaddr]) -> None:
        parsed = [parse_quic_multiaddr(addr) for addr in addrs]
        created: list[Endpoint] = []
        try:
            for addr in parsed:
                created.append(await self._factory(addr.host, addr.port))
        except BaseException:
            for endpoint in created:
                await endpoint.aclose()
            raise
        for endpoint in created:
            self._listen_endpoints.append(endpoint)
            self._owner.spawn(partial(self._accept_loop, endpoint),
                              f"accept loop {endpoint.local_address}")

    def listen_addrs(self) -> list[Multiaddr]:
        out: dict[Multiaddr, None] = {}
        for endpoint in self._listen_endpoints:
            host, port = endpoint.local_address[:2]
            out.update(dict.fromkeys(expand_unspecified(host, port)))
        return list(out)

    def endpoints(self) -> list[Endpoint]:
        """The live endpoints, listening ones first (NAT traversal uses their sockets)."""
        return self._listen_endpoints + self._dial_endpoints + self._extra_endpoints

    async def open_extra_endpoint(self, host: str, port: int) -> Endpoint:
        """An endpoint bound to exactly ``host:port`` that accepts like the
        others but is never chosen for ordinary dials (birthday punching
        turns the socket that won into one); closed with the transport or
        by ``close_extra_endpoint``."""
        endpoint = await self._factory(host, port)
        self._extra_endpoints.append(endpoint)
        self._owner.spawn(partial(self._accept_loop, endpoint), "accept loop (extra endpoint)")
        return endpoint

    async def close_extra_endpoint(self, endpoint: Endpoint) -> None:
        if endpoint in self._extra_endpoints:
            self._extra_endpoints.remove(endpoint)
            await endpoint.aclose()

    async def _accept_loop(self, endpoint: Endpoint) -> None:
        while not self._closing:
            try:
                conn = await endpoint.accept()
            except TransportError as exc:
                log.debug("endpoint %s stopped accepting: %r", endpoint.local_address, exc)
                return
            try:
                self._owner.adopt(conn)
            except LimitExceeded as exc:
                log.debug("inbound connection refused: %s", exc)

    # -- dialing ---------------------------------------------------------------

    async def resolve(self, addr: Multiaddr) -> tuple[str, int]:
        """The IP and port ``addr`` names (DNS names resolved)."""
        parsed = parse_quic_multiaddr(addr)
        host, port = parsed.host, parsed.port
        if not parsed.is_dns:
            return host, port
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise DialError(f"cannot resolve {host}: {exc}") from exc
        if not infos:
            raise DialError(f"{host} has no addresses")
        return str(infos[0][4][0]), port

    async def dial(self, addr: Multiaddr, peer: PeerId | None) -> Connection:
        ip, port = await self.resolve(addr)
        return await self.dial_ip(ip, port, peer)

    async def dial_ip(self, ip: str, port: int, peer: PeerId | None) -> Connection:
        endpoint = await self._endpoint_for(ip)
        return await endpoint.dial((ip, port), peer)

    async def _endpoint_for(self, ip: str) -> Endpoint:
        ipv6 = is_ipv6(ip)
        remote_loopback = is_loopback(ip)
        async with self._lock:
            for endpoint in self._listen_endpoints + self._dial_endpoints:
                local = endpoint.local_address[0]
                # A loopback-bound socket cannot reach other hosts.
                if is_ipv6(local) == ipv6 and (remote_loopback or not is_loopback(local)):
                    return endpoint
            endpoint = await self._factory("::" if ipv6 else "0.0.0.0", 0)
            self._dial_endpoints.append(endpoint)
        self._owner.spawn(partial(self._accept_loop, endpoint), "accept loop (dial endpoint)")
        return endpoint

    # -- lifetime --------------------------------------------------------------

    async def aclose(self) -> None:
        self._closing = True
        for endpoint in self.endpoints():
            try:
                await endpoint.aclose()
            except (OverlayError, OSError) as err:
                log.debug("closing endpoint: %s", err)

    def abort_for_test(self) -> None:
        self._closing = True
        for endpoint in self.endpoints():
            endpoint.abort_for_test()
