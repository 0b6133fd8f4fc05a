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

The session, the easy side and the outcomes live here; the hard side's
sockets and dials are ``birthday_hard.HardSideDriver``, which reads this
service's ``host``, ``config``, ``rng``, ``counters`` and ``sup``.
``outcome_with`` tells DCUtR's responder how a session it gave way to ended.
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
    OverlayError,
    ProtocolNotSupported,
    StreamReset,
    TransportError,
)
from overlay.host.addrs import is_ipv6, is_loopback
from overlay.host.events import HostListener
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import DIRECT, RELAYED, Connection
from overlay.identity import PeerId
from overlay.nat.birthday_core import (
    BirthdayConfig,
    EasyProber,
    Failed,
    NotNeeded,
    Refused,
    Role,
    SendProbes,
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
    probe_datagram,
)
from overlay.nat.birthday_hard import HardSideDriver, next_item
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
        self.host = host
        self.config = config or BirthdayConfig()
        self._kind = nat_kind
        self._context = context
        self.public_endpoints = public
        self.rng = rng or random.Random()
        self._limiter = SprayLimiter(self.config)
        self._sessions: dict[PeerId, asyncio.Queue[object]] = {}
        self.sup = Supervisor("birthday", log)
        self._listener = HostListener(opened=self._on_opened)
        self._hard = HardSideDriver(self)
        self.outcomes: deque[BirthdayOutcome] = deque(maxlen=64)
        self.counters: dict[str, int] = {
            "sessions": 0, "direct": 0, "failed": 0, "refused": 0, "not_needed": 0,
            "probes_sent": 0, "sockets_opened": 0, "refused_rate": 0,
            "endpoints_released": 0, "knocks": 0,
        }
        self._ended: dict[PeerId, asyncio.Event] = {}
        """Set when the running session with that peer ends."""
        self._latest: dict[str, tuple[float, bool, str]] = {}
        """(when, ok, how) of the latest session with each peer that ended
        with an outcome (not "not needed"), the newest 256."""
        self.last_ready: tuple[tuple[int, int], ...] | None = None
        """The port ranges our latest READY predicted (hard side)."""
        self.activity = asyncio.Event()
        """Set whenever a session ended (``outcomes`` and the counters
        changed) or a winning socket's endpoint was released."""

    async def __aenter__(self) -> BirthdayService:
        await self.sup.__aenter__()
        self.host.set_stream_handler(PROTOCOL, self._handle)
        self.host.add_listener(self._listener)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.host.remove_listener(self._listener)
        if self.host.is_running:
            self.host.remove_stream_handler(PROTOCOL)
        await self.sup.aclose()

    def status(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "last_ready": None if self.last_ready is None else [list(r) for r in self.last_ready],
            "recent": [{"peer": o.peer, "role": o.role, "ok": o.ok, "how": o.how,
                        "packets": o.packets, "port": o.port, "probe_index": o.probe_index,
                        "elapsed_ms": round(o.elapsed * 1000, 1)} for o in self.outcomes],
        }

    async def outcome_with(self, peer: PeerId) -> tuple[bool, str] | None:
        """(ok, how) of our session with ``peer``, once it ended (it may be
        running), if it ended within ``message_timeout`` seconds; None when
        it decided it was not needed, or there was none lately: what DCUtR's
        responder reports when the initiator stopped DCUtR for birthday
        punching."""
        ended = self._ended.get(peer)
        if ended is not None:
            await ended.wait()
        latest = self._latest.get(str(peer))
        if latest is None or time.monotonic() - latest[0] > self.config.message_timeout:
            return None
        return latest[1], latest[2]

    def _record(self, outcome: BirthdayOutcome) -> None:
        self._latest.pop(outcome.peer, None)
        self._latest[outcome.peer] = (time.monotonic(), outcome.ok, outcome.how)
        while len(self._latest) > 256:
            del self._latest[next(iter(self._latest))]
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
        known = self.host.peerstore.protocols(peer)
        if known and not self.host.peerstore.supports(peer, PROTOCOL):
            tell(False)
            return None
        try:
            # Lazily, without waiting for identify: HELLO rides with the
            # negotiation, and a peer without the protocol refuses it at
            # our first read (ProtocolNotSupported: not for this peer).
            stream = await self.host.open_stream_on(relayed, [PROTOCOL], lazy=True)
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

    def our_public(self) -> tuple[str, int] | None:
        for ip, port in self.public_endpoints():
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
        self._latest.pop(str(peer), None)
        ended = self._ended[peer] = asyncio.Event()
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
            del self._ended[peer]
            ended.set()

    async def send(self, stream: NegotiatedStream, message: Message) -> None:
        stream.write(frame(encode(message)))
        await stream.drain()

    async def _send_quietly(self, stream: NegotiatedStream, message: Message) -> None:
        try:
            await self.send(stream, message)
        except OverlayError:
            pass  # the peer is gone: nothing to tell it

    async def _run(self, stream: NegotiatedStream, relayed: Connection,
                   inbox: asyncio.Queue[object], started: float,
                   decided: Callable[[bool], None],
                   heard: list[bool]) -> tuple[bool, str] | None:
        peer = stream.remote_peer
        cfg = self.config
        ours = self._kind()
        public = self.our_public()
        nonce = secrets.token_bytes(NONCE_SIZE)
        ip, port = public if public is not None else ("0.0.0.0", 0)
        await self.send(stream, Hello(ours, nonce, ip, port))
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
                    result = await self._hard.run(stream, relayed, target, inbox, nonce,
                                                  theirs.nonce, dialled)
            finally:
                reader.cancel()
        won = result.port if isinstance(result, Succeeded) else None
        if isinstance(result, Succeeded):
            best = self.host.best_connection(peer)
            if best is not None and best.path == DIRECT:
                self.host.mark_punched(best)
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

    # -- the easy side --------------------------------------------------------------

    def _sender_for(self, ip: str) -> _Sender | None:
        for endpoint in self.host.endpoints():
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
            item = await next_item(inbox, deadline)
            if item is None:
                return Failed("the peer sent no READY in time", 0)
            if isinstance(item, tuple) and item[0] == "message" and isinstance(item[1], Ready):
                ready = item[1]
            elif isinstance(item, tuple) and item[0] == "direct":
                return Succeeded(0)
            elif isinstance(item, tuple) and item[0] in ("eof", "error", "message"):
                return Failed(f"the peer stopped before READY ({item[0]})", 0)
        prober = EasyProber(cfg, ip, ready.ranges, self.rng, time.monotonic())
        order.append(prober.ports)
        while prober.outcome is None:
            for action in prober.on_timer(time.monotonic()):
                if isinstance(action, SendProbes):
                    self._probe(sender, action, nonce)
            if prober.outcome is not None:
                break
            item = await next_item(inbox, prober.next_deadline())
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
            item = await next_item(inbox, deadline)
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
