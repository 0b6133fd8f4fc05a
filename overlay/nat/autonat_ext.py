"""AutoNAT v2 inside the daemon: the ``AutoNATExtension`` and its
``autonat_status`` op (reply in docs/api.md, "AutoNAT").

The daemon config's ``autonat`` key decides: ``on`` (the default) runs the
client and the server with the spec's heuristics, ``lab`` also tests and
dials private and loopback addresses and settles a verdict on one server's
word (namespaces and tests), ``off`` runs nothing.  STUN-mapped addresses
from the ``NatExtension`` and the UPnP mapping from the ``UpnpExtension``
join the candidates when they run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from overlay.daemon.api import ApiCall, ApiServer
from overlay.daemon.errors import BadRequest
from overlay.nat.autonat_service import AutoNATConfig, AutoNATService, lab_config
from overlay.nat.reachability import ReachabilitySource, ReachabilityState

__all__ = ["AutoNATExtension", "state_json", "autonat_summary"]

log = logging.getLogger(__name__)


def state_json(service: AutoNATService, now: float) -> dict[str, Any]:
    """The ``autonat_status`` reply."""
    state = service.state
    client = service.client
    return {
        "reachability": state.reachability.value,
        "reasons": list(state.reasons),
        "confirmed_addrs": list(state.confirmed),
        "refuted_addrs": list(state.refuted),
        "candidates": [{"addr": c.addr, "sources": list(c.sources)} for c in client.candidates],
        "addresses": [
            {"addr": v.addr, "reachability": v.reachability.value,
             "confirmed_by": list(v.confirmed_by), "refuted_by": list(v.refuted_by),
             "expires_in_s": round(v.expires_at - now, 1) if v.expires_at is not None else None}
            for v in client.tracker.verdicts(now)],
        "serving": service.serving(),
        "lab": service.config.server.lab,
        "server_counters": dict(service.server.core.counters),
        "client_counters": dict(service.counters),
    }


def autonat_summary(state: ReachabilityState, serving: bool) -> str:
    """One line for ``overlay status``."""
    text = state.reachability.value
    if state.confirmed:
        text += f" via {state.confirmed[0]}"
        if len(state.confirmed) > 1:
            text += f" (+{len(state.confirmed) - 1})"
    elif state.refuted:
        text += f" ({len(state.refuted)} address{'es' if len(state.refuted) > 1 else ''} refuted)"
    return text + ("; serving" if serving else "; not serving")


class AutoNATExtension:
    """Runs an ``AutoNATService`` on the daemon's host; ``service`` is it
    while the daemon runs (None with ``autonat = "off"``)."""

    def __init__(self, config: AutoNATConfig | None = None) -> None:
        self._explicit = config
        self.service: AutoNATService | None = None

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[AutoNATService | None]:
        return self._run(daemon)

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[AutoNATService | None]:
        mode = getattr(daemon.config, "autonat", "on")
        daemon.api.register("autonat_status", self.autonat_status)
        if self._explicit is None and mode == "off":
            yield None
            return
        config = self._explicit or (lab_config() if mode == "lab" else AutoNATConfig())
        async with AutoNATService(daemon.host, config,
                                  stun_addrs=lambda: _stun_addrs(daemon),
                                  upnp_addrs=lambda: _upnp_addrs(daemon)) as service:
            self.service = service
            ops = getattr(daemon, "ops", None)
            if ops is not None:
                ops.reachability_source = service
            try:
                yield service
            finally:
                if ops is not None:
                    ops.reachability_source = None
                self.service = None

    @property
    def reachability(self) -> ReachabilitySource | None:
        """What auto-relay reads (``state``) and subscribes to (``on_change``)."""
        return self.service

    def register(self, server: ApiServer) -> None:
        server.register("autonat_status", self.autonat_status)

    def summary(self) -> str | None:
        service = self.service
        return autonat_summary(service.state, service.serving()) if service else None

    async def autonat_status(self, call: ApiCall) -> Mapping[str, Any]:
        service = self.service
        if service is None:
            raise BadRequest("AutoNAT is not running (config key autonat = \"off\")")
        return state_json(service, time.monotonic())


def _stun_addrs(daemon: Any) -> Iterable[str]:
    """Public addresses STUN servers mapped us to, if STUN runs."""
    from overlay.nat.daemon_ext import NatExtension, _multiaddr

    for extension in getattr(daemon, "extensions", ()):
        if isinstance(extension, NatExtension):
            report = extension.report()
            if report is None:
                return []
            return [_multiaddr(p.address) for p in report.public
                    if any(src.startswith("stun") for src in p.sources)]
    return []


def _upnp_addrs(daemon: Any) -> Iterable[str]:
    """The home router's UPnP mapping of our QUIC port, if UPnP runs."""
    from overlay.nat.upnp_ext import UpnpExtension

    for extension in getattr(daemon, "extensions", ()):
        if isinstance(extension, UpnpExtension):
            return extension.mapped_addrs()
    return []
