"""Rendezvous inside the daemon: the ``RendezvousExtension`` serves
``/rendezvous/1.0.0`` when the daemon is an introducer (``introducer =
true`` / ``--introducer``) and, on every daemon, runs the client ops
``rendezvous_register``, ``rendezvous_unregister`` and
``rendezvous_discover`` (arguments and replies in docs/api.md) plus the
refresher that keeps registrations alive.

The rendezvous point is ``at`` (a multiaddr or a peer ID) or, by default,
each bootstrap peer whose identify lists the protocol.  Registrations are
withdrawn (best effort, bounded) when the daemon stops, so peers do not
discover a node that is gone for the rest of its TTL.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from multiaddr import Multiaddr

from overlay.daemon.api import ApiCall, ApiServer
from overlay.daemon.error_codes import RendezvousErrorCode
from overlay.daemon.errors import ApiError, BadRequest
from overlay.daemon.schema import DISCOVER_LIMIT_DEFAULT, RENDEZVOUS_LIMIT_MAX
from overlay.errors import OverlayError
from overlay.host.addrs import observed_to_quic
from overlay.identity import PeerId, PrivateKey
from overlay.multiaddrs import parse_quic_multiaddr
from overlay.rendezvous.client import DiscoveryPage, Refresher, RendezvousClient
from overlay.rendezvous.errors import InvalidNamespace, NoRendezvousPoint, RendezvousRefused
from overlay.rendezvous.messages import PROTOCOL_ID, Status, check_namespace
from overlay.rendezvous.refresh import RefreshConfig
from overlay.rendezvous.service import RendezvousServer, ServerConfig
from overlay.supervisor import run_supervised

__all__ = ["RendezvousExtension", "MAX_DISCOVER_LIMIT", "DEFAULT_DISCOVER_LIMIT"]

log = logging.getLogger(__name__)

# The op's bounds, declared with its arguments (overlay/daemon/schema.py).
MAX_DISCOVER_LIMIT = RENDEZVOUS_LIMIT_MAX
DEFAULT_DISCOVER_LIMIT = DISCOVER_LIMIT_DEFAULT
_POINT_TIMEOUT = 10.0
"""Seconds to reach and identify one default rendezvous point."""
_GOODBYE_TIMEOUT = 2.0
"""Seconds the daemon spends withdrawing its registrations when it stops."""
# Refusals that mean "your input is wrong" (exit 2 on the CLI).
_INPUT_STATUSES = frozenset({Status.E_INVALID_NAMESPACE, Status.E_INVALID_TTL,
                             Status.E_INVALID_COOKIE})


def _failure(point: PeerId | str, exc: BaseException) -> dict[str, Any]:
    entry: dict[str, Any] = {"point": str(point), "error": str(exc) or type(exc).__name__}
    if isinstance(exc, RendezvousRefused):
        entry["status"] = exc.name
    return entry


class RendezvousExtension:
    """``serve`` None follows the daemon config's ``introducer``; ``key``
    signs the peer records of this node's registrations."""

    def __init__(self, key: PrivateKey | None, *, serve: bool | None = None,
                 server_config: ServerConfig | None = None,
                 refresh: RefreshConfig | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._serve = serve
        self._server_config = server_config
        self._refresh_config = refresh
        self._wall = wall_clock
        self.server: RendezvousServer | None = None
        self.client: RendezvousClient | None = None
        self.refresher: Refresher | None = None
        self._daemon: Any = None

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[RendezvousExtension]:
        return self._run(daemon)

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[RendezvousExtension]:
        serve = self._serve if self._serve is not None else bool(
            getattr(daemon.config, "introducer", False))
        self._daemon = daemon
        async with AsyncExitStack() as stack:
            if serve:
                self.server = await stack.enter_async_context(RendezvousServer(
                    daemon.host, self._server_config, clock=self._wall))
            if self._key is not None:
                self.client = RendezvousClient(daemon.host, self._key, self._advertised,
                                               wall_clock=self._wall)
                self.refresher = Refresher(self.client, self._refresh_config)
                await stack.enter_async_context(self.refresher)
                # Runs before the refresher stops: withdraw what it keeps alive.
                stack.push_async_callback(self._goodbye)
            self.register(daemon.api)
            try:
                yield self
            finally:
                await stack.aclose()
                self.server = self.client = self.refresher = None
                self._daemon = None

    def register(self, server: ApiServer) -> None:
        server.register("rendezvous_register", self.rendezvous_register)
        server.register("rendezvous_unregister", self.rendezvous_unregister)
        server.register("rendezvous_discover", self.rendezvous_discover)

    def _advertised(self) -> list[Multiaddr]:
        """Listen addresses, then the ones peers observed (a NAT's mapping)."""
        host = self._daemon.host
        addrs: list[Multiaddr] = list(host.listen_addrs())
        for addr, _ in host.observed_addrs.addrs():
            quic = observed_to_quic(addr)
            if quic is not None and quic not in addrs:
                addrs.append(quic)
        return addrs

    async def _goodbye(self) -> None:
        client, refresher = self.client, self.refresher
        if client is None or refresher is None or not len(refresher.plan):
            return
        try:
            async with asyncio.timeout(_GOODBYE_TIMEOUT), asyncio.TaskGroup() as tg:
                for point, ns in refresher.plan.entries():
                    tg.create_task(run_supervised(client.unregister(point, ns),
                                                  f"unregister {ns!r} at {point}", log))
        except TimeoutError:
            log.info("not every rendezvous point heard that we are leaving")

    # -- arguments ------------------------------------------------------------

    def _client(self) -> tuple[RendezvousClient, Refresher]:
        if self.client is None or self.refresher is None:
            raise BadRequest("rendezvous is not running on this daemon (no identity key)")
        return self.client, self.refresher

    @staticmethod
    def _namespace(call: ApiCall, *, allow_empty: bool = False) -> str:
        ns = call.str_arg("ns", "" if allow_empty else None)
        if ns is None:
            raise BadRequest(f"`{call.op}` needs the string field `ns`")
        try:
            return check_namespace(ns, allow_empty=allow_empty)
        except InvalidNamespace as exc:
            raise BadRequest(f"`ns`: {exc}") from None

    async def _points(self, call: ApiCall) -> list[PeerId]:
        at = call.str_arg("at", None)
        host = self._daemon.host
        if at is not None:
            return [await self._explicit_point(at)]
        points: list[PeerId] = []
        for text in getattr(self._daemon.config, "bootstrap", ()):
            try:
                peer = PeerId.from_string(text.rsplit("/p2p/", 1)[1])
                async with asyncio.timeout(_POINT_TIMEOUT):
                    if peer not in host.peers():
                        await host.connect(text)
                    if not host.peerstore.protocols(peer):
                        await host.identify(peer)  # the automatic one may still run
            except (OverlayError, TimeoutError, OSError, IndexError) as exc:
                log.debug("bootstrap peer %s is no rendezvous point now: %r", text, exc)
                continue
            if host.peerstore.supports(peer, PROTOCOL_ID) and peer not in points:
                points.append(peer)
        if not points:
            raise ApiError(RendezvousErrorCode.NO_POINT, str(NoRendezvousPoint(
                "none of the bootstrap peers serves " + PROTOCOL_ID
                + "; name a rendezvous point with `at` (--at MULTIADDR|PEERID)")))
        return points

    async def _explicit_point(self, at: str) -> PeerId:
        host = self._daemon.host
        if not at.startswith("/"):
            return PeerId.from_string(at)  # InvalidPeerId: invalid_peer_id, exit 2
        parts = at.split("/")
        if len(parts) == 3 and parts[1] in ("p2p", "ipfs"):
            return PeerId.from_string(parts[2])
        parse_quic_multiaddr(at)  # InvalidMultiaddr names the bad part
        conn = await host.connect(at)
        peer: PeerId = conn.remote_peer
        return peer

    @staticmethod
    def _raise_all_failed(op: str, points: list[PeerId], errors: list[BaseException]) -> None:
        if len(errors) == 1:
            exc = errors[0]
            if isinstance(exc, RendezvousRefused):
                if exc.status in _INPUT_STATUSES:
                    raise BadRequest(str(exc)) from None
                raise ApiError(RendezvousErrorCode.REFUSED, str(exc)) from None
            raise exc
        detail = "; ".join(f"{p}: {e}" for p, e in zip(points, errors))
        raise ApiError(RendezvousErrorCode.FAILED, f"`{op}` failed at every rendezvous point: {detail}")

    # -- ops ------------------------------------------------------------------

    async def rendezvous_register(self, call: ApiCall) -> Mapping[str, Any]:
        client, refresher = self._client()
        ns = self._namespace(call)
        ttl: int | None = call.arg("ttl")
        points = await self._points(call)
        registered: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        errors: list[BaseException] = []
        for point in points:
            try:
                granted = await client.register(point, ns, ttl)
            except (OverlayError, TimeoutError, OSError) as exc:
                errors.append(exc)
                failed.append(_failure(point, exc))
                continue
            refresher.add(point, ns, ttl, granted)
            registered.append({"point": str(point), "ttl": granted,
                               "expires": round(self._wall() + granted, 3)})
        if not registered:
            self._raise_all_failed(call.op, points, errors)
        return {"ns": ns, "registered": registered, "failed": failed,
                "addrs": [str(a) for a in self._advertised()]}

    async def rendezvous_unregister(self, call: ApiCall) -> Mapping[str, Any]:
        client, refresher = self._client()
        ns = self._namespace(call)
        points = await self._points(call)
        done: list[str] = []
        failed: list[dict[str, Any]] = []
        errors: list[BaseException] = []
        for point in points:
            refresher.remove(point, ns)  # stop refreshing even if the point is unreachable
            try:
                await client.unregister(point, ns)
            except (OverlayError, TimeoutError, OSError) as exc:
                errors.append(exc)
                failed.append(_failure(point, exc))
                continue
            done.append(str(point))
        if not done:
            self._raise_all_failed(call.op, points, errors)
        return {"ns": ns, "unregistered": done, "failed": failed}

    async def rendezvous_discover(self, call: ApiCall) -> Mapping[str, Any]:
        client, _ = self._client()
        ns = self._namespace(call, allow_empty=True)
        limit: int = call.arg("limit")
        cookie = self._cookie_arg(call)
        points = await self._points(call)
        if cookie and len(points) != 1:
            raise BadRequest("`cookie` belongs to one rendezvous point: name it with `at`")
        host = self._daemon.host
        peers: dict[PeerId, dict[str, Any]] = {}
        answered: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        errors: list[BaseException] = []
        for point in points:
            try:
                page: DiscoveryPage = await client.discover(point, ns, limit, cookie)
            except (OverlayError, TimeoutError, OSError) as exc:
                errors.append(exc)
                failed.append(_failure(point, exc))
                continue
            answered.append({"point": str(point), "count": len(page.peers),
                             "rejected": page.rejected,
                             "cookie": base64.b64encode(page.cookie).decode()})
            for found in page.peers:
                if found.peer != host.peer_id and found.addrs:
                    # Discovered peers can be dialed by ID afterwards.
                    host.peerstore.add_addrs(found.peer, list(found.addrs))
                entry = peers.setdefault(found.peer, {
                    "peer_id": str(found.peer), "ns": found.ns, "ttl": found.ttl,
                    "addrs": [f"{a}/p2p/{found.peer}" for a in found.addrs],
                    "self": found.peer == host.peer_id, "points": []})
                entry["points"].append(str(point))
        if not answered:
            self._raise_all_failed(call.op, points, errors)
        reply: dict[str, Any] = {"ns": ns, "peers": list(peers.values()),
                                 "points": answered, "failed": failed}
        if len(answered) == 1:
            reply["cookie"] = answered[0]["cookie"]
        return reply

    @staticmethod
    def _cookie_arg(call: ApiCall) -> bytes:
        text = call.str_arg("cookie", None)
        if not text:
            return b""
        try:
            cookie = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("`cookie` must be base64, as a discover reply gave it") from None
        if len(cookie) > 1024:
            raise BadRequest("`cookie` is longer than any rendezvous cookie")
        return cookie

