"""Circuit relay v2 inside the daemon: the ``RelayExtension``.

On an introducer (``introducer = true`` / ``--introducer``) it serves the
hop protocol under the ``relay_limits`` table.  On every daemon it runs
the stop handler (``client``, whose ``on_circuit`` the circuit transport
takes) and auto-relay: reservations on the ``relays`` of the config
(``--relay``) always, and on up to two relays that serve hop (introducers
first) while the node looks private.  The ``relay_status`` op reports both
sides (docs/api.md, "Circuit relay").
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from multiaddr import Multiaddr

from overlay.daemon.api import ApiCall, ApiServer
from overlay.daemon.errors import BadRequest
from overlay.identity import PeerId, PrivateKey
from overlay.multiaddrs import split_p2p
from overlay.relay.autorelay import AutoRelay, AutoRelayConfig, hop_candidates
from overlay.relay.client import RelayClient
from overlay.relay.config import relay_limits_from_table
from overlay.relay.server import RelayServer
from overlay.relay.server_core import RelayLimits

__all__ = ["RelayExtension", "PRIVATE_NAT_TYPES"]

log = logging.getLogger(__name__)

PRIVATE_NAT_TYPES = frozenset({"symmetric", "restricted cone", "port-restricted cone",
                               "cone (filtering unknown)"})
"""STUN classifications under which nobody can dial us unasked."""


def _limit_json(limit: Any) -> dict[str, Any] | None:
    if limit is None:
        return None
    return {"duration_s": limit.duration, "data_bytes": limit.data}


def _limits_json(limits: RelayLimits) -> dict[str, Any]:
    return {
        "reservation_ttl_s": limits.reservation_ttl,
        "reservations": limits.max_reservations,
        "reservations_per_ip": limits.max_reservations_per_prefix,
        "circuits_per_peer": limits.max_circuits_per_peer,
        "circuits": limits.max_circuits,
        "duration_s": limits.circuit_duration,
        "data_bytes": limits.circuit_data,
        "allowlist": sorted(str(p) for p in limits.allowlist),
    }


class RelayExtension:
    """``serve`` None follows the config's ``introducer``; ``limits`` None
    reads its ``relay_limits``; ``private`` forces the reachability answer
    (tests), otherwise AutoNAT's verdict or the STUN classification."""

    def __init__(self, key: PrivateKey, *, serve: bool | None = None,
                 limits: RelayLimits | None = None,
                 autorelay: AutoRelayConfig | None = None,
                 private: bool | None = None) -> None:
        self._key = key
        self._serve = serve
        self._limits = limits
        self._autorelay = autorelay
        self._private = private
        self.server: RelayServer | None = None
        self.client: RelayClient | None = None
        self.auto: AutoRelay | None = None
        self._daemon: Any = None

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[RelayExtension]:
        return self._run(daemon)

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[RelayExtension]:
        config = daemon.config
        host = daemon.host
        self._daemon = daemon
        serve = self._serve if self._serve is not None else bool(config.introducer)
        auto_config = self._autorelay or AutoRelayConfig(static=tuple(config.relays))
        async with AsyncExitStack() as stack:
            if serve:
                limits = self._limits or relay_limits_from_table(config.relay_limits)
                self.server = await stack.enter_async_context(
                    RelayServer(host, self._key, limits))
            self.client = await stack.enter_async_context(RelayClient(host))
            self.auto = await stack.enter_async_context(AutoRelay(
                host, self.client, auto_config,
                is_private=self.is_private,
                candidates=self._candidates,
                on_addrs=self._advertise))
            auto = self.auto
            for extension in daemon.extensions:
                source = getattr(extension, "reachability", None)
                if source is not None and callable(getattr(source, "on_change", None)):
                    # Turning private (or public) changes which relays we want.
                    stack.callback(source.on_change(lambda _state: auto.wake()))
            daemon.api.register("relay_status", self.relay_status)
            try:
                yield self
            finally:
                self.server = self.client = self.auto = None

    # -- hooks ---------------------------------------------------------------

    def is_private(self) -> bool:
        if self._private is not None:
            return self._private
        daemon = self._daemon
        if daemon is None or getattr(daemon.config, "introducer", False):
            return False
        for extension in daemon.extensions:
            source = getattr(extension, "reachability", None)
            state = getattr(source, "state", None)
            verdict = getattr(getattr(state, "reachability", None), "value", None)
            if verdict in ("public", "private"):
                return bool(verdict == "private")
        for extension in daemon.extensions:
            report = getattr(extension, "report", None)
            if callable(report) and type(extension).__name__ == "NatExtension":
                nat = report()
                if nat is not None:
                    return nat.nat_type in PRIVATE_NAT_TYPES
        return False

    def _candidates(self) -> list[PeerId]:
        daemon = self._daemon
        if daemon is None:
            return []
        host = daemon.host
        preferred: list[PeerId] = []
        for addr in daemon.config.bootstrap:
            _, peer = split_p2p(addr)
            if peer is not None:
                preferred.append(peer)
        return hop_candidates(host.peers(), host.peerstore.supports, preferred)

    def _advertise(self, added: list[Multiaddr], removed: list[Multiaddr]) -> None:
        host = self._daemon.host if self._daemon is not None else None
        if host is None:
            return
        if removed and hasattr(host, "remove_advertised_addrs"):
            host.remove_advertised_addrs(removed)
        if added and hasattr(host, "add_advertised_addrs"):
            host.add_advertised_addrs(added)

    # -- the op ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.time()
        client, auto, server = self.client, self.auto, self.server
        if client is None or auto is None:
            raise BadRequest("the relay service is not running")
        me = client.host.peer_id
        reservations = []
        for info in client.reservations():
            reservations.append({
                "relay": str(info.relay),
                "expire": info.expire,
                "expires_in_s": round(info.expire - now, 1),
                "addrs": [f"{a}/p2p-circuit/p2p/{me}" for a in info.addrs],
                "voucher": info.voucher is not None,
                "limit": _limit_json(info.limit),
            })
        out: dict[str, Any] = {
            "private": self.is_private(),
            "static_relays": list(auto.config.static),
            "reservations": reservations,
            "advertised": [f"{a}/p2p/{me}" for a in auto.advertised()],
            "errors": {str(k): v for k, v in auto.last_errors.items()},
            "circuits_accepted": client.circuits_accepted,
            "stop_refused": client.stop_refused,
            "server": None,
        }
        if server is not None:
            stats = server.stats()
            out["server"] = {
                "reservations": [{"peer": str(p), "expire": int(e),
                                  "expires_in_s": round(e - now, 1)}
                                 for p, e in server.reservations()],
                "reservations_held": stats.reservations_held,
                "reservations_granted": stats.reservations_granted,
                "reservations_renewed": stats.reservations_renewed,
                "circuits_active": stats.circuits_active,
                "circuits_total": stats.circuits_total,
                "circuits_cut_by_limit": stats.circuits_cut_by_limit,
                "bytes_relayed": stats.bytes_relayed,
                "refusals": dict(sorted(stats.refusals.items())),
                "limits": _limits_json(server.limits),
            }
        return out

    def register(self, server: ApiServer) -> None:
        server.register("relay_status", self.relay_status)

    async def relay_status(self, call: ApiCall) -> Mapping[str, Any]:
        return self.status()
