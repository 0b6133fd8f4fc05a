"""The birthday-punching driver: carries out ``overlay.nat.birthday_core``'s
actions on a host (docs/nat.md, "Birthday punching").

``/ovl/birthday/1.0.0`` runs on a stream of a relayed connection.  The
DCUtR initiator calls ``try_upgrade`` as the relayed connection arrives,
beside its CONNECT and its unilateral dial, on a lazily negotiated stream
(a peer without the protocol refuses it: not for this peer); DCUtR holds
SYNC until the HELLOs decided.  The other side answers in the stream
handler.  Both send HELLO (NAT kind, nonce, public
endpoint) and decide the same way: neither symmetric returns to DCUtR,
both symmetric stays relayed with the reason, otherwise one is hard and
one easy:

- the easy side sends probes from its listening socket (the one whose
  mapping it announced) to the hard side's IP and accepts the QUIC dial
  that follows on that socket;
- the hard side first dials the easy side's endpoint from its listening
  socket (twice, a relayed RTT apart), which gets through when the easy
  side's NAT does not filter by port (no NAT, full cone; a restricted cone
  once the easy side's knock went out); beside that dial it
  opens plain UDP sockets, each sending one packet to the
  easy side's endpoint; the socket a probe reaches becomes a QUIC endpoint
  (``QuicTransport.open_extra_endpoint``, bound to the same port, so the
  NAT mapping is kept) and dials the easy side.  That endpoint lives as
  long as its connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from multiaddr import Multiaddr

from overlay.errors import (
    InvalidMultiaddr,
    LimitExceeded,
    OverlayError,
    ProtocolNotSupported,
    StreamReset,
    TransportError,
)
from overlay.host.addrs import is_ipv6, is_loopback
from overlay.host.events import HostListener
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import DIRECT, RELAYED, Connection, Endpoint
from overlay.identity import PeerId
from overlay.multiaddrs import parse_quic_multiaddr, split_p2p
from overlay.nat.birthday_core import (
    Action,
    BirthdayConfig,
    DialFrom,
    EasyProber,
    Failed,
    HardSide,
    NotNeeded,
    OpenSockets,
    Refused,
    Role,
    SendProbes,
    SendReady,
    SprayLimiter,
    Succeeded,
    decide,
)
from overlay.nat.birthday_messages import (
    MAX_MESSAGE_SIZE,
    NONCE_SIZE,
    PROTOCOL,
    Hello,
    Message,
    NatKind,
    Ready,
    Refuse,
    decode,
    encode,
    parse_probe,
    probe_datagram,
)
from overlay.nat.dcutr_core import AddrContext, filter_addrs
from overlay.supervisor import Supervisor
from overlay.wire.varint import frame, read_frame

__all__ = ["BirthdayService", "BirthdayOutcome", "PROTOCOL"]

log = logging.getLogger(__name__)

ContextFn = Callable[[PeerId, Connection], AddrContext]


@dataclass(frozen=True, slots=True)
class BirthdayOutcome:
    peer: str
    role: str
    """``hard``, ``easy``, or ``-`` when no role was taken."""
    ok: bool
    how: str
    packets: int
    elapsed: float
    port: int | None = None
    probe_index: int | None = None
    """Easy side: the winning port's place in the probe order (0 is the
    first probe), so prediction hits show as small numbers."""


@runtime_checkable
class _Sender(Protocol):
    @property
    def local_address(self) -> tuple[str, int]: ...

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None: ...


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


_EOF = ("eof",)


class BirthdayService:
    """``async with BirthdayService(host, config, nat_kind=…) as birthday:``.

    ``nat_kind`` says what our NAT is (from STUN and identify);
    ``context`` gives what a peer's addresses must agree with (DCUtR's);
    ``public`` lists our public endpoints, most attested first."""

    def __init__(self, host: Any, config: BirthdayConfig | None = None, *,
                 nat_kind: Callable[[], NatKind],
                 context: ContextFn,
                 public: Callable[[], Iterable[tuple[str, int]]],
                 rng: random.Random | None = None) -> None:
        self._host = host
        self.config = config or BirthdayConfig()
        self._kind = nat_kind
        self._context = context
        self._public = public
        self._rng = rng or random.Random()
        self._limiter = SprayLimiter(self.config)
        self._sessions: dict[PeerId, asyncio.Queue[object]] = {}
        self._sup = Supervisor("birthday", log)
        self._listener = HostListener(opened=self._on_opened)
        self.outcomes: deque[BirthdayOutcome] = deque(maxlen=64)
        self.counters: dict[str, int] = {
            "sessions": 0, "direct": 0, "failed": 0, "refused": 0, "not_needed": 0,
            "probes_sent": 0, "sockets_opened": 0, "refused_rate": 0,
            "endpoints_released": 0, "knocks": 0,
        }
        self.last_ready: tuple[tuple[int, int], ...] | None = None
        """The port ranges our latest READY predicted (hard side)."""
        self.activity = asyncio.Event()
        """Set whenever a session ended (``outcomes`` and the counters
        changed) or a winning socket's endpoint was released."""

    async def __aenter__(self) -> BirthdayService:
        await self._sup.__aenter__()
        self._host.set_stream_handler(PROTOCOL, self._handle)
        self._host.add_listener(self._listener)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._host.remove_listener(self._listener)
        if self._host.is_running:
            self._host.remove_stream_handler(PROTOCOL)
        await self._sup.aclose()

    def status(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "last_ready": None if self.last_ready is None else [list(r) for r in self.last_ready],
            "recent": [{"peer": o.peer, "role": o.role, "ok": o.ok, "how": o.how,
                        "packets": o.packets, "port": o.port, "probe_index": o.probe_index,
                        "elapsed_ms": round(o.elapsed * 1000, 1)} for o in self.outcomes],
        }

    def _record(self, outcome: BirthdayOutcome) -> None:
        self.outcomes.append(outcome)
        key = "direct" if outcome.ok else ("refused" if outcome.role == "-" else "failed")
        self.counters[key] += 1
        log.info("birthday punch with %s as %s: %s (%s), %d packets in %.3f s", outcome.peer,
                 outcome.role, "direct" if outcome.ok else "still relayed", outcome.how,
                 outcome.packets, outcome.elapsed)
        self.activity.set()

    def _on_opened(self, conn: Connection) -> None:
        if conn.path == DIRECT:
            inbox = self._sessions.get(conn.remote_peer)
            if inbox is not None:
                inbox.put_nowait(("direct", conn))

    # -- entry points --------------------------------------------------------------

    async def try_upgrade(self, relayed: Connection,
                          decided: Callable[[bool], None] | None = None,
                          ) -> tuple[bool, str] | None:
        """Run the protocol as the opener on ``relayed``.  None: not for
        this peer (it does not speak it, or no side is symmetric: DCUtR's
        turn); else whether a direct connection came, and how or why not.

        ``decided(True)`` is called as soon as the HELLOs say this exchange
        takes over (one side symmetric, or both), ``decided(False)`` when
        it will return None: DCUtR runs beside HELLO and waits only for
        that."""
        peer = relayed.remote_peer
        tell = decided or (lambda _: None)
        if relayed.path != RELAYED:
            tell(False)
            return None
        known = self._host.peerstore.protocols(peer)
        if known and not self._host.peerstore.supports(peer, PROTOCOL):
            tell(False)
            return None
        try:
            # Lazily, without waiting for identify: HELLO rides with the
            # negotiation, and a peer without the protocol refuses it at
            # our first read (ProtocolNotSupported: not for this peer).
            stream = await self._host.open_stream_on(relayed, [PROTOCOL], lazy=True)
        except OverlayError as exc:
            log.debug("birthday stream to %s: %r", peer, exc)
            tell(False)
            return None
        return await self._session(stream, relayed, tell)

    async def _handle(self, stream: NegotiatedStream) -> None:
        if stream.conn.path != RELAYED:
            stream.reset()
            return
        await self._session(stream, stream.conn, lambda _: None)

    # -- one session ---------------------------------------------------------------

    def _our_public(self) -> tuple[str, int] | None:
        for ip, port in self._public():
            if not is_ipv6(ip):  # IPv4 only: where symmetric NATs live
                return ip, port
        return None

    async def _session(self, stream: NegotiatedStream, relayed: Connection,
                       decided: Callable[[bool], None]) -> tuple[bool, str] | None:
        peer = stream.remote_peer
        started = time.monotonic()
        if peer in self._sessions or not self._limiter.allow_session(peer, started):
            self.counters["refused_rate"] += 1
            decided(False)
            await self._send_quietly(stream, Refuse("busy or over the session limit"))
            stream.reset()
            return None
        inbox: asyncio.Queue[object] = asyncio.Queue()
        self._sessions[peer] = inbox
        self.counters["sessions"] += 1
        heard: list[bool] = []
        """Non-empty once the peer's first message came."""
        try:
            return await self._run(stream, relayed, inbox, started, decided, heard)
        except (ProtocolNotSupported, StreamReset) as exc:
            if isinstance(exc, ProtocolNotSupported) or not heard:
                # The peer does not speak it: a lazy open learns that at the
                # first read, as "na" or as a reset of the stream.
                self.counters["sessions"] -= 1
                decided(False)
                return None
            reason = f"the birthday stream failed: {exc}"
            self._record(BirthdayOutcome(str(peer), "-", False, reason, 0,
                                         time.monotonic() - started))
            stream.reset()
            return False, reason
        except asyncio.CancelledError:
            stream.reset()
            raise
        except (OverlayError, OSError) as exc:
            reason = f"the birthday stream failed: {exc}"
            self._record(BirthdayOutcome(str(peer), "-", False, reason, 0,
                                         time.monotonic() - started))
            stream.reset()
            return False, reason
        finally:
            del self._sessions[peer]

    async def _send(self, stream: NegotiatedStream, message: Message) -> None:
        stream.write(frame(encode(message)))
        await stream.drain()

    async def _send_quietly(self, stream: NegotiatedStream, message: Message) -> None:
        try:
            await self._send(stream, message)
        except OverlayError:
            pass  # the peer is gone: nothing to tell it

    async def _run(self, stream: NegotiatedStream, relayed: Connection,
                   inbox: asyncio.Queue[object], started: float,
                   decided: Callable[[bool], None],
                   heard: list[bool]) -> tuple[bool, str] | None:
        peer = stream.remote_peer
        cfg = self.config
        ours = self._kind()
        public = self._our_public()
        nonce = secrets.token_bytes(NONCE_SIZE)
        ip, port = public if public is not None else ("0.0.0.0", 0)
        await self._send(stream, Hello(ours, nonce, ip, port))
        async with asyncio.timeout(cfg.message_timeout):
            first = await read_frame(stream, MAX_MESSAGE_SIZE)
        heard.append(True)
        theirs = None if first is None else decode(first)

        def elapsed() -> float:
            return time.monotonic() - started

        order: list[tuple[int, ...]] = []
        dialled: list[Connection] = []
        """The hard side's plain dial from its listening socket won."""

        def ended(role: str, ok: bool, how: str, packets: int = 0,
                  won: int | None = None) -> tuple[bool, str]:
            index = order[0].index(won) if order and won in order[0] else None
            self._record(BirthdayOutcome(str(peer), role, ok, how, packets, elapsed(), won,
                                         index))
            self._close(stream, ok)
            return ok, how

        if not isinstance(theirs, Hello):
            decided(False)  # nothing agreed: DCUtR may still work
            why = theirs.reason if isinstance(theirs, Refuse) else "the peer sent no HELLO"
            return ended("-", False, f"the peer refused: {why}")
        verdict = decide(ours, theirs.kind)
        decided(not isinstance(verdict, NotNeeded))
        if isinstance(verdict, NotNeeded):
            self.counters["not_needed"] += 1
            self.activity.set()
            self._close(stream, True)
            return None
        if isinstance(verdict, Refused):
            return ended("-", False, verdict.reason)
        target = self._check(peer, relayed, theirs)
        if isinstance(target, str):
            await self._send_quietly(stream, Refuse(target))
            return ended("-", False, target)
        # Either side sends packets to the other's claimed IP (256 openers,
        # or up to 2048 probes): both count against that IP.
        if not self._limiter.allow_spray(target[0], time.monotonic()):
            why = f"{target[0]} was sprayed {cfg.sprays_per_ip} times lately"
            await self._send_quietly(stream, Refuse(why))
            return ended("-", False, why)
        if verdict is Role.EASY and public is None:
            why = "we know no public endpoint of ours"
            await self._send_quietly(stream, Refuse(why))
            return ended("-", False, why)
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(self._reader(stream, inbox))
            try:
                if verdict is Role.EASY:
                    result = await self._easy(target, inbox, theirs.nonce, order)
                else:
                    result = await self._hard(stream, relayed, target, inbox, nonce,
                                              theirs.nonce, dialled)
            finally:
                reader.cancel()
        won = result.port if isinstance(result, Succeeded) else None
        if isinstance(result, Succeeded):
            best = self._host.best_connection(peer)
            if best is not None and best.path == DIRECT:
                self._host.mark_punched(best)
            how = f"birthday ({verdict.value} side, {result.packets} " \
                  f"{'probes' if verdict is Role.EASY else 'sockets'})"
            if dialled:
                how = f"birthday (hard side, dialled directly, {result.packets} sockets)"
            return ended(verdict.value, True, how, result.packets, won)
        return ended(verdict.value, False, result.reason, result.packets)

    def _close(self, stream: NegotiatedStream, ok: bool) -> None:
        try:
            stream.write_eof()
        except OverlayError:
            pass  # already gone

    def _check(self, peer: PeerId, relayed: Connection,
               hello: Hello) -> tuple[str, int] | str:
        """The peer's public endpoint if packets may go there, else why not:
        the same filter as DCUtR's (public, not ours, not the relay's, not
        another peer's)."""
        if is_ipv6(hello.ip):
            return f"the peer's endpoint {hello.ip} is IPv6; birthday punching is IPv4 only"
        addr = Multiaddr(f"/ip4/{hello.ip}/udp/{max(1, hello.port)}/quic-v1")
        kept, dropped = filter_addrs([addr.to_bytes()], self._context(peer, relayed),
                                     max_addrs=1, allow_private=self.config.allow_private)
        if not kept:
            return f"the peer's endpoint is not one to send to ({'; '.join(dropped)})"
        return hello.ip, hello.port

    async def _reader(self, stream: NegotiatedStream, inbox: asyncio.Queue[object]) -> None:
        while True:
            try:
                data = await read_frame(stream, MAX_MESSAGE_SIZE)
            except OverlayError as exc:
                inbox.put_nowait(("error", str(exc)))
                return
            if data is None:
                inbox.put_nowait(_EOF)
                return
            try:
                inbox.put_nowait(("message", decode(data)))
            except OverlayError as exc:
                inbox.put_nowait(("error", str(exc)))
                return

    async def _next(self, inbox: asyncio.Queue[object], deadline: float | None) -> object:
        delay = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(delay):
                return await inbox.get()
        except TimeoutError:
            return None

    # -- the easy side --------------------------------------------------------------

    def _sender_for(self, ip: str) -> _Sender | None:
        for endpoint in self._host.endpoints():
            if not isinstance(endpoint, _Sender):
                continue
            local = endpoint.local_address[0]
            if is_ipv6(local) == is_ipv6(ip) and (is_loopback(ip) or not is_loopback(local)):
                return endpoint
        return None

    async def _easy(self, hard: tuple[str, int], inbox: asyncio.Queue[object], nonce: bytes,
                    order: list[tuple[int, ...]]) -> Succeeded | Failed:
        cfg = self.config
        ip = hard[0]
        sender = self._sender_for(ip)
        if sender is None:
            return Failed(f"no socket of ours reaches {ip}", 0)
        # One packet to the hard side's IP at once: a NAT of ours that
        # filters by address (restricted cone) then lets in the QUIC dial
        # the hard side makes from its listening socket (``_dial_easy``),
        # which needs no spray when our NAT does not filter by port.
        # It is not one of the spray's probes (nor counted as one).
        knock_port = max(1, hard[1])
        try:
            sender.sendto(probe_datagram(nonce, knock_port), (ip, knock_port))
            self.counters["knocks"] += 1
        except (OSError, TransportError) as exc:
            log.debug("knock to %s:%d: %r", ip, knock_port, exc)
        deadline = time.monotonic() + cfg.message_timeout
        ready: Ready | None = None
        while ready is None:
            item = await self._next(inbox, deadline)
            if item is None:
                return Failed("the peer sent no READY in time", 0)
            if isinstance(item, tuple) and item[0] == "message" and isinstance(item[1], Ready):
                ready = item[1]
            elif isinstance(item, tuple) and item[0] == "direct":
                return Succeeded(0)
            elif isinstance(item, tuple) and item[0] in ("eof", "error", "message"):
                return Failed(f"the peer stopped before READY ({item[0]})", 0)
        prober = EasyProber(cfg, ip, ready.ranges, self._rng, time.monotonic())
        order.append(prober.ports)
        while prober.outcome is None:
            for action in prober.on_timer(time.monotonic()):
                if isinstance(action, SendProbes):
                    self._probe(sender, action, nonce)
            if prober.outcome is not None:
                break
            item = await self._next(inbox, prober.next_deadline())
            if isinstance(item, tuple) and item[0] == "direct":
                remote = getattr(item[1], "remote_address", None)
                prober.on_direct(time.monotonic(), None if remote is None else int(remote[1]))
            elif isinstance(item, tuple) and item[0] in ("eof", "error"):
                # The hard side ends its stream once its dial from the
                # winning socket is through, which may be before our side
                # of that handshake is: wait for it a little.
                direct = await self._await_direct(inbox, time.monotonic() + cfg.grace)
                if direct is not None:
                    prober.on_direct(time.monotonic(), direct)
                else:
                    prober.stop(f"the peer stopped after {prober.sent} probes ({item[0]})")
        assert prober.outcome is not None
        return prober.outcome

    async def _await_direct(self, inbox: asyncio.Queue[object], deadline: float) -> int | None:
        """The remote port of a direct connection arriving before ``deadline``."""
        while True:
            item = await self._next(inbox, deadline)
            if item is None:
                return None
            if isinstance(item, tuple) and item[0] == "direct":
                remote = getattr(item[1], "remote_address", None)
                return int(remote[1]) if remote is not None else 0

    def _probe(self, sender: _Sender, action: SendProbes, nonce: bytes) -> None:
        for port in action.ports:
            try:
                sender.sendto(probe_datagram(nonce, port), (action.ip, port))
                self.counters["probes_sent"] += 1
            except (OSError, TransportError) as exc:
                log.debug("probe to %s:%d: %r", action.ip, port, exc)

    # -- the hard side --------------------------------------------------------------

    def _bind_ip(self) -> str:
        for endpoint in self._host.endpoints():
            local = str(endpoint.local_address[0])
            if not is_ipv6(local) and not is_loopback(local):
                return local
        for endpoint in self._host.endpoints():
            local = str(endpoint.local_address[0])
            if not is_ipv6(local):
                return local
        return "0.0.0.0"

    def _observed_ports(self, ip: str | None) -> list[int]:
        ports = []
        for addr, _ in self._host.observed_addrs.addrs():
            try:
                parsed = parse_quic_multiaddr(split_p2p(addr)[0])
            except InvalidMultiaddr:
                continue
            if ip is None or parsed.host == ip:
                ports.append(parsed.port)
        return ports

    async def _hard(self, stream: NegotiatedStream, relayed: Connection,
                    easy: tuple[str, int], inbox: asyncio.Queue[object], nonce: bytes,
                    their_nonce: bytes, dialled: list[Connection]) -> Succeeded | Failed:
        """``nonce`` (ours) must be in every probe; openers carry theirs.
        Beside the spray, a plain QUIC dial to the easy side's endpoint
        from our listening socket (``_dial_easy``)."""
        peer = relayed.remote_peer
        if not self.config.plain_dial:
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
        transport = next((t for t in self._host.transports() if t.path == DIRECT), None)
        if transport is None:
            return
        addr = Multiaddr(f"/ip4/{easy[0]}/udp/{easy[1]}/quic-v1")
        rtt = relayed.smoothed_rtt
        second = min(1.0, max(0.05, rtt if rtt else 0.25))

        async def one(after: float) -> Connection | None:
            if after:
                await asyncio.sleep(after)  # a timed retry, not a wait for state
            try:
                async with asyncio.timeout(self.config.dial_timeout):
                    conn: Connection = await transport.dial(addr, peer)
                    return conn
            except (OverlayError, OSError) as exc:  # TimeoutError is an OSError
                log.debug("birthday: plain dial to %s: %r", addr, exc)
                return None

        won: Connection | None = None
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(0.0)), tg.create_task(one(second))]
            for next_done in asyncio.as_completed(tasks):
                won = await next_done
                if won is not None:
                    for task in tasks:
                        task.cancel()
                    break
        for task in tasks:  # one that finished beside the winner
            if task.done() and not task.cancelled() and task.result() not in (None, won):
                extra = task.result()
                assert extra is not None
                extra.close(0, "another dial won")
        if won is None:
            return
        dialled.append(won)  # before adopt(): its ``opened`` event ends the spray
        try:
            self._host.adopt(won)
        except LimitExceeded as exc:
            dialled.remove(won)
            won.close(0, "over the connection limits")
            log.info("birthday: direct connection to %s refused by the limits: %s", peer, exc)
            return
        self._host.mark_punched(won)

    async def _spray(self, stream: NegotiatedStream, peer: PeerId, easy: tuple[str, int],
                     inbox: asyncio.Queue[object], nonce: bytes,
                     their_nonce: bytes) -> Succeeded | Failed:
        public = self._our_public()
        ports = self._observed_ports(public[0] if public else None)
        ports += [p for ip, p in self._public() if public is None or ip == public[0]]
        listen = {int(e.local_address[1]) for e in self._host.endpoints()}
        keeps = any(p in listen for p in ports) if ports else None
        core = HardSide(self.config, easy, ports, self._rng, time.monotonic(),
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
                item = await self._next(inbox, core.next_deadline())
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
            self.counters["sockets_opened"] += len(opened)
            core.on_sockets(opened)
        elif isinstance(action, SendReady):
            self.last_ready = action.message.ranges
            await self._send(stream, action.message)

    async def _dial_from(self, action: DialFrom, core: HardSide, peer: PeerId,
                         sockets: dict[int, _ProbeSocket], bind_ip: str, port: int) -> None:
        transport = next((t for t in self._host.transports()
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
            self._host.adopt(conn)
        except (OverlayError, OSError, TimeoutError, LimitExceeded) as exc:
            log.info("birthday dial from port %d to %s:%d: %r", action.local_port,
                     action.addr[0], action.addr[1], exc)
            conn = None
            if endpoint is not None:
                await transport.close_extra_endpoint(endpoint)
        if conn is None or endpoint is None:
            core.on_dial_result(False, time.monotonic())
            return
        self._host.mark_punched(conn)
        kept = endpoint
        self._sup.spawn(lambda: self._release(transport, kept, conn),
                        f"birthday endpoint {action.local_port}")
        core.on_dial_result(True, time.monotonic(), port)

    async def _release(self, transport: Any, endpoint: Endpoint, conn: Connection) -> None:
        """Close the winning socket's endpoint once its connection is gone."""
        try:
            await conn.wait_closed()
        finally:
            await transport.close_extra_endpoint(endpoint)
            self.counters["endpoints_released"] += 1
            self.activity.set()
