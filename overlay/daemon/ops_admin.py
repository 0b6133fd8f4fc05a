"""The operator's ops of the stream API: ``status``, ``stop`` and
``disconnect`` (arguments and replies in docs/api.md, "Administration").

They read the daemon as a whole (host, config, extensions), so they take
the ``Daemon`` through ``AdminDaemon``, the slice of it they use.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from multiaddr import Multiaddr

from overlay import AGENT_VERSION
from overlay.daemon.api import ApiCall, ApiServer
from overlay.daemon.config import DaemonConfig
from overlay.daemon.errors import ApiError
from overlay.daemon.ops import full_addrs
from overlay.daemon.ops_dht import DhtExtension
from overlay.daemon.ops_name import NameExtension
from overlay.daemon.protocol import API_VERSION
from overlay.errors import InvalidMultiaddr
from overlay.host.host import Host
from overlay.identity import PeerId
from overlay.multiaddrs import parse_quic_multiaddr
from overlay.mdns.daemon_ext import MdnsExtension
from overlay.naming.names import self_certifying_name
from overlay.nat.autonat_ext import AutoNATExtension
from overlay.nat.daemon_ext import NatExtension, summary_line

__all__ = ["AdminDaemon", "AdminOps", "AdminOpsConfig", "NOT_FOUND", "reachability"]

log = logging.getLogger(__name__)

NOT_FOUND = "not_found"
"""``disconnect`` of a peer that is not connected (the CLI exits 4)."""


class AdminDaemon(Protocol):
    @property
    def host(self) -> Host: ...

    @property
    def config(self) -> DaemonConfig: ...

    @property
    def api_path(self) -> Path: ...

    @property
    def extensions(self) -> Sequence[object]: ...


@dataclass(frozen=True, slots=True)
class AdminOpsConfig:
    disconnect_wait: float = 5.0
    """Seconds ``disconnect`` waits for the connections to finish closing."""

    def __post_init__(self) -> None:
        if not self.disconnect_wait > 0:
            raise ValueError("disconnect_wait must be positive")


def reachability(listen: Sequence[Multiaddr], observed: Sequence[tuple[Multiaddr, int]],
                 connected: int) -> str:
    """How peers see us, from what identify reported (a heuristic, no probe):

    ``offline`` — no peer is connected; ``unknown`` — no peer reported an
    address; ``direct`` — some peer sees the port we listen on; ``nat`` —
    peers see us only on other ports (a NAT maps us)."""
    if connected == 0:
        return "offline"
    if not observed:
        return "unknown"
    bound: set[tuple[str | None, int]] = set()
    for addr in listen:
        try:
            parsed = parse_quic_multiaddr(addr)
        except InvalidMultiaddr:
            continue
        wildcard = ipaddress.ip_address(parsed.host).is_unspecified
        bound.add((None if wildcard else parsed.host, parsed.port))
    for addr, _ in observed:
        try:
            seen = parse_quic_multiaddr(addr)
        except InvalidMultiaddr:
            continue
        if (seen.host, seen.port) in bound or (None, seen.port) in bound:
            return "direct"
    return "nat"


class AdminOps:
    """Registers ``status``, ``stop`` and ``disconnect`` and serves them."""

    def __init__(
        self,
        daemon: AdminDaemon,
        request_stop: Callable[[], None],
        config: AdminOpsConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._daemon = daemon
        self._request_stop = request_stop
        self._config = config or AdminOpsConfig()
        self._clock = clock
        self._started = clock()
        self._started_at = wall_clock()

    def register(self, server: ApiServer) -> None:
        server.register("status", self.status)
        server.register("stop", self.stop)
        server.register("disconnect", self.disconnect)

    def _extension(self, kind: type[object]) -> Any:
        for extension in self._daemon.extensions:
            if isinstance(extension, kind):
                return extension
        return None

    async def status(self, call: ApiCall) -> Mapping[str, Any]:
        daemon = self._daemon
        host = daemon.host
        peers = sorted({str(conn.remote_peer) for conn in host.connections()})
        observed = host.observed_addrs.addrs()
        listen = host.listen_addrs()
        dht: dict[str, Any] | None = None
        extension = self._extension(DhtExtension)
        kad = extension.kad if extension is not None else None
        if kad is not None:
            dht = {"mode": kad.config.mode, "protocol": kad.protocol,
                   "table_size": len(kad.table), "bootstrapped": kad.bootstrapped.is_set()}
        names: list[str] | None = None
        dns: str | None = None
        naming = self._extension(NameExtension)
        if naming is not None and naming.names is not None:
            names = [entry.record.name for entry in naming.names.owned()]
        if naming is not None and naming.dns_address is not None:
            dns_host, dns_port = naming.dns_address
            dns = f"[{dns_host}]:{dns_port}" if ":" in dns_host else f"{dns_host}:{dns_port}"
        nat_extension = self._extension(NatExtension)
        nat_report = nat_extension.report() if nat_extension is not None else None
        mdns_extension = self._extension(MdnsExtension)
        autonat_extension = self._extension(AutoNATExtension)
        return {
            "peer_id": str(host.peer_id),
            "name": self_certifying_name(host.peer_id, daemon.config.zone),
            "agent_version": AGENT_VERSION,
            "api_version": API_VERSION,
            "pid": os.getpid(),
            "uptime_s": round(self._clock() - self._started, 3),
            "started_at": round(self._started_at, 3),
            "reachability": reachability(listen, observed, len(peers)),
            "listen_addrs": full_addrs(listen, host.peer_id),
            "observed_addrs": [{"addr": str(addr), "reporters": count} for addr, count in observed],
            "peers": peers,
            "dht": dht,
            "names": names,
            "dns": dns,
            "nat": summary_line(nat_report) if nat_report is not None else None,
            "mdns": mdns_extension.summary() if mdns_extension is not None else None,
            "autonat": autonat_extension.summary() if autonat_extension is not None else None,
            "api_socket": str(daemon.api_path),
        }

    async def stop(self, call: ApiCall) -> Mapping[str, Any]:
        """Confirm with a ``stopping`` event, then ask the daemon to stop.

        The request stays open until the API shuts down and closes its
        connection: the client learns of the shutdown from that EOF, and of
        the process's exit by waiting on ``pid``."""
        await call.emit("stopping", pid=os.getpid(), peer_id=str(self._daemon.host.peer_id))
        log.info("stop requested through the API")
        self._request_stop()
        await asyncio.Event().wait()  # until the API server closes and cancels us
        return {}

    async def disconnect(self, call: ApiCall) -> Mapping[str, Any]:
        peer = PeerId.from_string(call.required_str("peer"))
        host = self._daemon.host
        conns = [conn for conn in host.connections() if conn.remote_peer == peer]
        if not conns:
            raise ApiError(NOT_FOUND, f"not connected to {peer}")
        host.disconnect(peer)
        try:
            async with asyncio.timeout(self._config.disconnect_wait):
                for conn in conns:
                    await conn.wait_closed()
        except TimeoutError:
            log.debug("connections to %s still closing after disconnect", peer)
        return {"peer_id": str(peer), "closed": len(conns)}
