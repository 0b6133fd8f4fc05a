"""STUN inside the daemon: the ``NatExtension`` and its ``nat_status`` op
(arguments and reply in docs/api.md, "NAT").

The servers come from the daemon config's ``stun`` list; ``introducer =
true`` makes the node answer binding requests on its QUIC ports (circuit
relay v2 will hang on the same flag).

The re-punch service runs beside STUN (``repunch``): it watches punched
connections, and when one dies while its peer matters it redials the peer
through its relay so that DCUtR punches again; a change of STUN's mapped
addresses makes it probe at once.  Its per-peer state shows in ``peers``
(``repunch``), its counters in ``stats``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from overlay.daemon.api import ApiCall, ApiServer
from overlay.daemon.errors import BadRequest
from overlay.errors import InvalidMultiaddr
from overlay.multiaddrs import parse_quic_multiaddr
from overlay.nat.behaviour import Verdict, format_address
from overlay.nat.config import StunServiceConfig
from overlay.nat.repunch_core import RepunchConfig
from overlay.nat.repunch_service import Punching, RepunchService
from overlay.nat.stun import Address
from overlay.nat.stun_service import NatReport, StunService

__all__ = ["NatExtension", "report_json", "summary_line"]

log = logging.getLogger(__name__)


def _verdict(verdict: Verdict) -> dict[str, str]:
    return {"behaviour": verdict.behaviour.value, "reason": verdict.reason}


def _multiaddr(addr: Address) -> str:
    kind = "ip6" if ":" in addr[0] else "ip4"
    return f"/{kind}/{addr[0]}/udp/{addr[1]}/quic-v1"


def report_json(report: NatReport, now: float) -> dict[str, Any]:
    """The ``nat_status`` reply for ``report`` at monotonic time ``now``."""
    return {
        "nat_type": report.nat_type,
        "mapping": _verdict(report.mapping),
        "filtering": _verdict(report.filtering),
        "public_addrs": [
            {"addr": format_address(entry.address), "multiaddr": _multiaddr(entry.address),
             "sources": list(entry.sources)}
            for entry in report.public],
        "sockets": [
            {"local": format_address(sock.local),
             "mapping": _verdict(sock.mapping),
             "filtering": _verdict(sock.filtering),
             "observations": [
                 {"server": format_address(obs.server), "mapped": format_address(obs.mapped),
                  "xor_mapped": obs.from_xor, "rtt_ms": round(obs.rtt * 1000, 1),
                  "age_s": round(now - obs.at, 1),
                  "other_address": (format_address(obs.other_address)
                                    if obs.other_address else None)}
                 for obs in sock.observations],
             "failures": [{"server": format_address(server), "error": error}
                          for server, error in sock.failures]}
            for sock in report.sockets],
        "stun_servers": list(report.servers),
        "introducer": report.serving,
        "stun_answered": report.answered,
        "stun_refused": report.refused,
        "last_round_age_s": (round(now - report.last_round, 1)
                             if report.last_round is not None else None),
    }


def summary_line(report: NatReport) -> str:
    """One line for ``overlay status``: the type and the best public address."""
    text = report.nat_type
    if report.public:
        text += f", public {format_address(report.public[0].address)}"
    if not report.servers:
        text += " (no STUN server configured)"
    return text


def _address_of(multiaddr: object) -> Address | None:
    try:
        parsed = parse_quic_multiaddr(str(multiaddr))
    except InvalidMultiaddr:
        return None
    return (parsed.host, parsed.port)


class NatExtension:
    """Runs a ``StunService`` on the daemon's host; ``service`` is it while
    the daemon runs.  Without ``config`` the daemon config's ``stun`` and
    ``introducer`` keys decide."""

    def __init__(self, config: StunServiceConfig | None = None,
                 repunch: RepunchConfig | None = None) -> None:
        self._explicit = config
        self._repunch_config = repunch
        self.service: StunService | None = None
        self.repunch: RepunchService | None = None
        """The re-punch service while the daemon runs (``stats`` reads it)."""
        self._host: Any = None
        self._daemon: Any = None

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[StunService]:
        return self._run(daemon)

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[StunService]:
        config = self._explicit or StunServiceConfig(
            servers=tuple(getattr(daemon.config, "stun", ())),
            serve=bool(getattr(daemon.config, "introducer", False)))
        self._host = daemon.host
        self._daemon = daemon
        async with StunService(daemon.host, config) as service, \
                RepunchService(daemon.host, self._repunch_config,
                               dcutr=lambda: _dcutr_of(daemon),
                               mapping=self._mapped) as repunch:
            self.service = service
            self.repunch = repunch
            self.register(daemon.api)
            ops = getattr(daemon, "ops", None)
            if ops is not None:
                ops.peer_fields = repunch.peer_fields
            try:
                yield service
            finally:
                if ops is not None:
                    ops.peer_fields = None
                self.service = None
                self.repunch = None

    def _mapped(self) -> frozenset[str]:
        """Our public addresses as STUN's last round saw them."""
        service = self.service
        if service is None:
            return frozenset()
        return frozenset(format_address(p.address) for p in service.report().public)

    def register(self, server: ApiServer) -> None:
        server.register("nat_status", self.nat_status)

    def report(self) -> NatReport | None:
        service, host = self.service, self._host
        if service is None or host is None:
            return None
        local_ips = [a[0] for a in map(_address_of, host.listen_addrs()) if a is not None]
        identify: list[tuple[Address, int]] = []
        for addr, count in host.observed_addrs.addrs():
            parsed = _address_of(addr)
            if parsed is not None:
                identify.append((parsed, count))
        return service.report(local_ips, identify)

    async def nat_status(self, call: ApiCall) -> Mapping[str, Any]:
        refresh: bool = call.arg("refresh")
        service = self.service
        if service is None:
            raise BadRequest("the NAT service is not running")
        if refresh:
            await service.refresh()
        report = self.report()
        if report is None:
            raise BadRequest("the NAT service stopped")
        now = time.monotonic()
        reply = report_json(report, now)
        _add_upnp(reply, self._daemon, now)
        return reply


def _dcutr_of(daemon: Any) -> Punching | None:
    """The running DCUtR service (None with ``--no-holepunch``)."""
    from overlay.nat.dcutr_ext import DcutrExtension

    for extension in getattr(daemon, "extensions", ()):
        if isinstance(extension, DcutrExtension):
            return extension.service
    return None


def _add_upnp(reply: dict[str, Any], daemon: Any, now: float) -> None:
    """The UPnP mapping, when the ``UpnpExtension`` runs, as a public
    address with source "upnp" and the mapper's state under ``upnp``."""
    from overlay.nat.upnp_ext import UpnpExtension, upnp_json

    for extension in getattr(daemon, "extensions", ()):
        if isinstance(extension, UpnpExtension):
            status = upnp_json(extension, now)
            reply["upnp"] = status
            mapping = status["mapping"]
            if mapping is not None:
                reply["public_addrs"].append({
                    "addr": f"{mapping['external_ip']}:{mapping['external_port']}",
                    "multiaddr": mapping["multiaddr"], "sources": ["upnp"]})
            return
