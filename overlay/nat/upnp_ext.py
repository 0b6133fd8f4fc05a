"""UPnP IGD inside the daemon: the ``UpnpExtension``.

On by default (config ``upnp``, ``overlay daemon --no-upnp``), and only
where ``upnp_core.decide`` allows it: a non-loopback IPv4 listen address and
a default gateway on a private LAN.  A node listening on loopback only never
sends SSDP.  The mapping joins AutoNAT's candidates (source ``upnp``) and
``nat_status`` (docs/api.md, "NAT").
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from overlay.errors import InvalidMultiaddr
from overlay.multiaddrs import parse_quic_multiaddr
from overlay.nat.upnp import PortMapper, default_gateway, discover_igd
from overlay.nat.upnp_core import UpnpConfig, UpnpDecision, could_run, decide

__all__ = ["UpnpExtension", "upnp_json"]

log = logging.getLogger(__name__)


def _listen(host: Any) -> list[tuple[str, int]]:
    found = []
    for addr in host.listen_addrs():
        try:
            parsed = parse_quic_multiaddr(str(addr))
        except InvalidMultiaddr:
            continue
        found.append((parsed.host, parsed.port))
    return found


class UpnpExtension:
    """Runs a ``PortMapper`` for the daemon's first IPv4 QUIC port when the
    rule allows; ``mapper`` is it while it runs, ``decision`` says why or
    why not."""

    def __init__(self, config: UpnpConfig | None = None, *,
                 discover: Callable[[str, float], Any] = discover_igd,
                 gateway: Callable[[], str | None] = default_gateway) -> None:
        self.config = config or UpnpConfig()
        self._discover = discover
        self._gateway = gateway
        self.mapper: PortMapper | None = None
        self.decision: UpnpDecision | None = None

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[PortMapper | None]:
        return self._run(daemon)

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[PortMapper | None]:
        if not getattr(daemon.config, "upnp", True):
            self.decision = UpnpDecision(False, None, "turned off (upnp = false)")
            yield None
            return
        listen = [(ip, port) for ip, port in _listen(daemon.host) if ":" not in ip]
        ips = [ip for ip, _ in listen]
        # The routing table is read only when a non-loopback address could use it.
        self.decision = decision = decide(ips, self._gateway() if could_run(ips) else None)
        if not decision.run or decision.lan_ip is None:
            log.debug("upnp off: %s", decision.reason)
            yield None
            return
        port = next(p for ip, p in listen if ip in (decision.lan_ip, "0.0.0.0"))
        lan_ip = decision.lan_ip
        if lan_ip == "0.0.0.0":
            log.info("upnp off: listening on 0.0.0.0; give a LAN address to map")
            self.decision = UpnpDecision(False, None, "wildcard listen address")
            yield None
            return
        mapper = PortMapper(lan_ip, port, self.config, discover=self._discover)
        async with mapper.running():
            self.mapper = mapper
            try:
                yield mapper
            finally:
                self.mapper = None

    def mapped_addrs(self) -> list[str]:
        mapper = self.mapper
        mapping = mapper.mapping if mapper is not None else None
        return [mapping.multiaddr] if mapping is not None else []

    def status(self) -> dict[str, Any]:
        return upnp_json(self, time.monotonic())


def upnp_json(ext: UpnpExtension, now: float) -> dict[str, Any]:
    """The ``upnp`` part of the ``nat_status`` reply."""
    decision = ext.decision
    mapper = ext.mapper
    reply: dict[str, Any] = {
        "running": mapper is not None,
        "reason": decision.reason if decision is not None else "not started",
        "igd": None, "mapping": None, "last_error": None, "failures": 0,
    }
    if mapper is None:
        return reply
    schedule = mapper.schedule
    mapping = schedule.current(now)
    reply["igd"] = mapper.location
    reply["last_error"] = schedule.last_error
    reply["failures"] = schedule.failures
    reply["next_attempt_in_s"] = round(max(0.0, schedule.next_deadline() - now), 1)
    if mapping is not None:
        reply["mapping"] = {
            "multiaddr": mapping.multiaddr, "external_ip": mapping.external_ip,
            "external_port": mapping.external_port,
            "internal": f"{mapping.internal_ip}:{mapping.internal_port}",
            "lease_s": mapping.lease,
            "expires_in_s": round(mapping.granted_at + mapping.lease - now, 1)}
    return reply
