"""Birthday punching's hard side (docs/nat.md, "Who sends what"): the
plain dial from the listening socket, the spray of fresh UDP sockets, and
the QUIC endpoint that takes over the socket a probe reached.

``HardSideDriver`` runs inside a ``BirthdayService`` session, which owns
the stream, the inbox this side's sockets feed and the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from multiaddr import Multiaddr

from overlay.errors import InvalidMultiaddr, LimitExceeded, OverlayError
from overlay.host.addrs import is_ipv6, is_loopback
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import DIRECT, Connection, Endpoint
from overlay.identity import PeerId
from overlay.multiaddrs import parse_quic_multiaddr, split_p2p
from overlay.nat.birthday_core import (
    Action,
    DialFrom,
    Failed,
    HardSide,
    OpenSockets,
    SendReady,
    Succeeded,
)
from overlay.nat.birthday_messages import Refuse, parse_probe, probe_datagram

if TYPE_CHECKING:
    from overlay.nat.birthday_service import BirthdayService

__all__ = ["HardSideDriver", "next_item"]

log = logging.getLogger(__name__)


class _ProbeSocket(asyncio.DatagramProtocol):
    """One of the hard side's sockets: hands probes to the session."""

    def __init__(self, inbox: asyncio.Queue[object]) -> None:
        self.inbox = inbox
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.gone = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone.set()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        parsed = parse_probe(data)
        if parsed is not None:
            self.inbox.put_nowait(("probe", self.port, (str(addr[0]), int(addr[1])), parsed))

    def error_received(self, exc: Exception) -> None:
        log.debug("birthday socket %d: %r", self.port, exc)


async def next_item(inbox: asyncio.Queue[object], deadline: float | None) -> object:
    """The next item of a session's inbox, or None once ``deadline`` passed."""
    delay = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        async with asyncio.timeout(delay):
            return await inbox.get()
    except TimeoutError:
        return None


class HardSideDriver:
    """The hard side's sockets and dials for a ``BirthdayService``."""

    def __init__(self, service: BirthdayService) -> None:
        self._s = service

    def _bind_ip(self) -> str:
        for endpoint in self._s.host.endpoints():
            local = str(endpoint.local_address[0])
            if not is_ipv6(local) and not is_loopback(local):
                return local
        for endpoint in self._s.host.endpoints():
            local = str(endpoint.local_address[0])
            if not is_ipv6(local):
                return local
        return "0.0.0.0"

    def _observed_ports(self, ip: str | None) -> list[int]:
        ports = []
        for addr, _ in self._s.host.observed_addrs.addrs():
            try:
                parsed = parse_quic_multiaddr(split_p2p(addr)[0])
            except InvalidMultiaddr:
                continue
            if ip is None or parsed.host == ip:
                ports.append(parsed.port)
        return ports

    async def run(self, stream: NegotiatedStream, relayed: Connection,
                    easy: tuple[str, int], inbox: asyncio.Queue[object], nonce: bytes,
                    their_nonce: bytes, dialled: list[Connection]) -> Succeeded | Failed:
        """``nonce`` (ours) must be in every probe; openers carry theirs.
        Beside the spray, a plain QUIC dial to the easy side's endpoint
        from our listening socket (``_dial_easy``)."""
        peer = relayed.remote_peer
        if not self._s.config.plain_dial:
            return await self._spray(stream, peer, easy, inbox, nonce, their_nonce)
        async with asyncio.TaskGroup() as tg:
            direct = tg.create_task(self._dial_easy(peer, easy, dialled, relayed))
            try:
                return await self._spray(stream, peer, easy, inbox, nonce, their_nonce)
            finally:
                direct.cancel()

    async def _dial_easy(self, peer: PeerId, easy: tuple[str, int],
                         dialled: list[Connection], relayed: Connection) -> None:
        """Dial the easy side's public endpoint as the QUIC client.  Our NAT
        gives this flow a port of its own, which a NAT in front of the easy
        side lets in unless it filters by port (no NAT, full cone, and a
        restricted cone once the easy side's knock went to our IP):
        one round trip instead of a spray.  Against a port-restricted cone
        it fails quietly while the spray goes on.

        A second dial follows a relayed round trip later: when we answered
        the HELLO, our first Initial meets a restricted cone at about the
        moment the easy side's knock opens it, and QUIC would only resend
        it after its first probe timeout."""
        transport = next((t for t in self._s.host.transports() if t.path == DIRECT), None)
        if transport is None:
            return
        addr = Multiaddr(f"/ip4/{easy[0]}/udp/{easy[1]}/quic-v1")
        rtt = relayed.smoothed_rtt
        second = min(1.0, max(0.05, rtt if rtt else 0.25))

        made: list[Connection] = []
        """Every connection a dial returned, so none is left unowned."""

        async def one(after: float) -> Connection | None:
            if after:
                await asyncio.sleep(after)  # a timed retry, not a wait for state
            try:
                async with asyncio.timeout(self._s.config.dial_timeout):
                    conn: Connection = await transport.dial(addr, peer)
                    made.append(conn)
                    return conn
            except (OverlayError, OSError) as exc:  # TimeoutError is an OSError
                log.debug("birthday: plain dial to %s: %r", addr, exc)
                return None

        won: Connection | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(one(0.0)), tg.create_task(one(second))]
                for next_done in asyncio.as_completed(tasks):
                    won = await next_done
                    if won is not None:
                        for task in tasks:
                            task.cancel()
                        break
        except asyncio.CancelledError:
            # The session ended (another direct connection, or the spray's
            # verdict) while a dial of ours had got through.  The peer has
            # adopted that connection, perhaps as its oldest, the one its
            # host uses: left unadopted here, what it sends there is lost.
            for conn in made:
                self._keep_late(peer, conn)
            raise
        for extra in made:  # one that finished beside the winner
            if extra is not won:
                extra.close(0, "another dial won")
        if won is None:
            return
        dialled.append(won)  # before adopt(): its ``opened`` event ends the spray
        try:
            self._s.host.adopt(won)
        except LimitExceeded as exc:
            dialled.remove(won)
            won.close(0, "over the connection limits")
            log.info("birthday: direct connection to %s refused by the limits: %s", peer, exc)
            return
        self._s.host.mark_punched(won)

    def _keep_late(self, peer: PeerId, conn: Connection) -> None:
        """Adopt a plain dial's connection that got through after the session
        ended: both sides then read it, whichever one each host prefers
        (closing it would break streams the peer may have opened on it).
        It counts as punched only when it is our sole direct path."""
        host = self._s.host
        best = host.best_connection(peer)
        sole = best is None or best.path != DIRECT
        try:
            host.adopt(conn)  # beyond the limits, or closing, it closes the connection
        except LimitExceeded as exc:
            log.info("birthday: late direct connection to %s not kept: %s", peer, exc)
            return
        log.debug("birthday: adopted a late plain dial's connection to %s", peer)
        if sole:
            host.mark_punched(conn)

    async def _spray(self, stream: NegotiatedStream, peer: PeerId, easy: tuple[str, int],
                     inbox: asyncio.Queue[object], nonce: bytes,
                     their_nonce: bytes) -> Succeeded | Failed:
        public = self._s.our_public()
        ports = self._observed_ports(public[0] if public else None)
        ports += [p for ip, p in self._s.public_endpoints() if public is None or ip == public[0]]
        listen = {int(e.local_address[1]) for e in self._s.host.endpoints()}
        keeps = any(p in listen for p in ports) if ports else None
        core = HardSide(self._s.config, easy, ports, self._s.rng, time.monotonic(),
                        keeps_ports=keeps)
        sockets: dict[int, _ProbeSocket] = {}
        bind_ip = self._bind_ip()
        try:
            while core.outcome is None:
                for action in core.on_timer(time.monotonic()):
                    await self._hard_action(action, core, stream, peer, sockets, bind_ip,
                                            inbox, their_nonce)
                if core.outcome is not None:
                    break
                item = await next_item(inbox, core.next_deadline())
                if isinstance(item, tuple) and item[0] == "probe":
                    _, local, source, (got_nonce, port) = item
                    ok = got_nonce == nonce
                    for action in core.on_probe(local, source, ok, time.monotonic()):
                        if isinstance(action, DialFrom):
                            await self._dial_from(action, core, peer, sockets, bind_ip, port)
                elif isinstance(item, tuple) and item[0] == "direct":
                    core.on_direct(time.monotonic())
                elif isinstance(item, tuple) and item[0] == "message" and isinstance(
                        item[1], Refuse):
                    core.stop(f"the peer refused: {item[1].reason}")
                elif isinstance(item, tuple) and item[0] in ("eof", "error"):
                    core.stop(f"the peer stopped ({item[0]})")
        finally:
            for sock in sockets.values():
                if sock.transport is not None:
                    sock.transport.close()
        assert core.outcome is not None
        return core.outcome

    async def _hard_action(self, action: Action, core: HardSide, stream: NegotiatedStream,
                           peer: PeerId, sockets: dict[int, _ProbeSocket], bind_ip: str,
                           inbox: asyncio.Queue[object], nonce: bytes) -> None:
        if isinstance(action, OpenSockets):
            loop = asyncio.get_running_loop()
            opened: list[int] = []
            for index in range(action.count):
                protocol = _ProbeSocket(inbox)
                want = action.first_port + index
                for port in (want, 0):
                    try:
                        protocol.transport, _ = await loop.create_datagram_endpoint(
                            lambda: protocol, local_addr=(bind_ip, port))
                        break
                    except OSError:
                        continue
                if protocol.transport is None:
                    continue
                local = int(protocol.transport.get_extra_info("sockname")[1])
                protocol.port = local
                sockets[local] = protocol
                opened.append(local)
                # The opener: our nonce is no secret to the easy side, which
                # drops this as noise (or its NAT does).
                try:
                    protocol.transport.sendto(probe_datagram(nonce, action.to[1]), action.to)
                except OSError as exc:
                    log.debug("birthday opener from port %d: %r", local, exc)
            self._s.counters["sockets_opened"] += len(opened)
            core.on_sockets(opened)
        elif isinstance(action, SendReady):
            self._s.last_ready = action.message.ranges
            await self._s.send(stream, action.message)

    async def _dial_from(self, action: DialFrom, core: HardSide, peer: PeerId,
                         sockets: dict[int, _ProbeSocket], bind_ip: str, port: int) -> None:
        transport = next((t for t in self._s.host.transports()
                          if t.path == DIRECT and hasattr(t, "open_extra_endpoint")), None)
        sock = sockets.pop(action.local_port, None)
        if transport is None or sock is None or sock.transport is None:
            core.on_dial_result(False, time.monotonic())
            return
        sock.transport.close()
        await sock.gone.wait()  # the port is free once the socket is closed
        endpoint: Endpoint | None = None
        conn: Connection | None = None
        try:
            endpoint = await transport.open_extra_endpoint(bind_ip, action.local_port)
            async with asyncio.timeout(action.timeout):
                conn = await endpoint.dial(action.addr, peer)
            self._s.host.adopt(conn)
        except (OverlayError, OSError, TimeoutError, LimitExceeded) as exc:
            log.info("birthday dial from port %d to %s:%d: %r", action.local_port,
                     action.addr[0], action.addr[1], exc)
            conn = None
            if endpoint is not None:
                await transport.close_extra_endpoint(endpoint)
        if conn is None or endpoint is None:
            core.on_dial_result(False, time.monotonic())
            return
        self._s.host.mark_punched(conn)
        kept = endpoint
        self._s.sup.spawn(lambda: self._release(transport, kept, conn),
                        f"birthday endpoint {action.local_port}")
        core.on_dial_result(True, time.monotonic(), port)

    async def _release(self, transport: Any, endpoint: Endpoint, conn: Connection) -> None:
        """Close the winning socket's endpoint once its connection is gone."""
        try:
            await conn.wait_closed()
        finally:
            await transport.close_extra_endpoint(endpoint)
            self._s.counters["endpoints_released"] += 1
            self._s.activity.set()
