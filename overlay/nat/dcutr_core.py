"""DCUtR hole punching over QUIC as pure state machines (libp2p/specs
relay/DCUtR.md), in the spec's two roles:

- ``DcutrInitiator`` runs on the side that was dialled through the relay
  (the inbound side of the relayed connection, the spec's B).  It sends
  CONNECT with its candidate addresses and times the round trip; when the
  peer's CONNECT comes back it sends SYNC, waits half that round trip, and
  then sends UDP packets of random bytes to the peer's addresses from its
  listening socket every 10–200 ms, opening its own NAT for the peer's QUIC
  dial, which it accepts as the QUIC server.
- ``DcutrResponder`` runs on the dialling side (the spec's A): it answers
  CONNECT with CONNECT and, on SYNC, dials the peer's addresses at once as
  the QUIC client.  With ``early_dial`` (ours, on by default) it also
  dials when CONNECT arrives, a relayed round trip before SYNC.

Up to ``max_attempts`` (3) attempts, each a fresh CONNECT / SYNC exchange
on the same stream so that one bad RTT measurement does not spoil the
others.  Addresses a peer sends are filtered (``filter_addrs``) before
anything is sent to them: at most ``max_addrs``, QUIC over IP literals
only, no private addresses of another network, nothing that we know
belongs to someone else.  ``PunchLimiter`` rate-limits sessions per peer.

No I/O, no clock, no global randomness: every entry point takes ``now``
and the payload bytes and packet spacing come from an injected
``random.Random``.  Outputs are frozen dataclasses the driver carries out.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from multiaddr import Multiaddr

from overlay.errors import InvalidMultiaddr
from overlay.limits import RateLimiter
from overlay.multiaddrs import parse_quic_multiaddr
from overlay.nat.dcutr_messages import MAX_ADDRS, HolePunch, MessageType

__all__ = [
    "DcutrConfig",
    "AddrContext",
    "Candidate",
    "SendMessage",
    "SendPunchPackets",
    "Dial",
    "Succeeded",
    "Failed",
    "Action",
    "DcutrInitiator",
    "DcutrResponder",
    "PunchLimiter",
    "filter_addrs",
    "punch_payload",
]

_LAN_NETS: Final = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))
_DOC_NETS: Final = tuple(ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))


@dataclass(frozen=True, slots=True)
class DcutrConfig:
    max_attempts: int = 3
    """Attempts per session (the spec: the initiator retries twice)."""
    punch_duration: float = 5.0
    """Seconds the initiator sends punch packets and waits for the peer's
    QUIC dial in one attempt (go-libp2p's hole-punch timeout)."""
    dial_timeout: float = 4.0
    """Seconds the responder's QUIC dial may take; shorter than
    ``punch_duration``, so it is listening again before the next CONNECT."""
    retry_backoff: float = 1.0
    """Seconds before the second attempt, doubled before each later one."""
    punch_interval: tuple[float, float] = (0.010, 0.200)
    """Bounds of the random spacing between punch packets (the spec's)."""
    punch_payload: tuple[int, int] = (64, 128)
    """Bounds of the size of a punch packet's random payload."""
    message_timeout: float = 10.0
    """Seconds to wait for the peer's next message."""
    max_sync_delay: float = 2.5
    """Cap on the initiator's RTT/2 wait: a slower relay says nothing
    useful about the direct path."""
    max_addrs: int = 8
    """Addresses punched or dialled per attempt, after filtering."""
    early_dial: bool = True
    """The responder also dials when CONNECT arrives, beside its answer,
    instead of only on SYNC (beyond the spec, invisible on the wire): its
    Initial opens its own NAT towards the initiator, and passes the
    initiator's NAT when that was opened already (a hint from our relay,
    or a cone the initiator sent to before), a relayed round trip earlier
    than the spec's dial.  The dial on SYNC still starts, with fresh
    connections, if the early one has not got through by then."""
    sessions_per_peer: int = 3
    """Sessions a peer may cause per ``session_window`` (either role)."""
    session_window: float = 600.0
    allow_private: bool = False
    """Lab flag: documentation-range and loopback addresses count as
    public (the netns lab's "Internet" is 203.0.113.0/24)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_addrs < 1 or self.sessions_per_peer < 1:
            raise ValueError("attempts, addresses and sessions must be at least 1")
        if not 0 < self.dial_timeout <= self.punch_duration:
            raise ValueError("dial_timeout must be positive and at most punch_duration")
        low, high = self.punch_interval
        if not 0 < low <= high:
            raise ValueError("punch_interval must be 0 < low <= high")
        if not 1 <= self.punch_payload[0] <= self.punch_payload[1] <= 1000:
            raise ValueError("punch_payload must be within 1..1000 bytes")
        if min(self.message_timeout, self.session_window, self.max_sync_delay) <= 0:
            raise ValueError("timeouts must be positive")
        if self.retry_backoff < 0:
            raise ValueError("retry_backoff must not be negative")


# -- addresses -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddrContext:
    """What we know that a peer's claimed addresses must agree with."""

    own_ips: frozenset[str] = frozenset()
    """Our own interface addresses: private addresses of the peer count
    only inside a network we are in too (the same /24, or /64)."""
    contradicted: frozenset[tuple[str, int]] = frozenset()
    """IP and port pairs known to be someone else's: ours, those of peers
    we hold direct connections to."""
    contradicted_ips: frozenset[str] = frozenset()
    """Whole IPs that cannot be the peer's: the relay's (the peer would not
    need it), and any AutoNAT or the relay contradicts."""


@dataclass(frozen=True, slots=True)
class Candidate:
    ip: str
    port: int
    multiaddr: Multiaddr


def _same_lan(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, own: Iterable[str]) -> bool:
    prefix = 24 if ip.version == 4 else 64
    net = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
    for text in own:
        try:
            if ipaddress.ip_address(text) in net:
                return True
        except ValueError:
            continue
    return False


def _address_problem(ip_text: str, ctx: AddrContext, allow_private: bool) -> str | None:
    ip = ipaddress.ip_address(ip_text)
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        return "not a unicast address"
    if ip.is_loopback:
        return None if allow_private and any(
            ipaddress.ip_address(o).is_loopback for o in ctx.own_ips) else "loopback"
    if any(ip in net for net in _LAN_NETS):
        return None if _same_lan(ip, ctx.own_ips) else "private address of another network"
    if any(ip in net for net in _DOC_NETS):
        return None if allow_private else "documentation range"
    if not ip.is_global:
        return "reserved range"
    return None


def filter_addrs(
    raw: Sequence[bytes], ctx: AddrContext, *, max_addrs: int, allow_private: bool = False
) -> tuple[list[Candidate], list[str]]:
    """The peer's addresses worth a packet, at most ``max_addrs``, and one
    line per address dropped saying why.  Pure and bounded: at most
    ``MAX_ADDRS`` entries are even looked at."""
    kept: list[Candidate] = []
    dropped: list[str] = []
    seen: set[tuple[str, int]] = set()
    for blob in raw[:MAX_ADDRS]:
        try:
            addr = Multiaddr(blob)
            parsed = parse_quic_multiaddr(addr)
        except (InvalidMultiaddr, ValueError, LookupError, TypeError) as exc:
            dropped.append(f"{blob[:16].hex()}…: not a QUIC address ({type(exc).__name__})")
            continue
        if parsed.is_dns:
            dropped.append(f"{addr}: a DNS name (we punch IP literals only)")
            continue
        key = (parsed.host, parsed.port)
        if key in seen:
            continue
        seen.add(key)
        if key in ctx.contradicted or parsed.host in ctx.contradicted_ips:
            dropped.append(f"{addr}: known to be someone else's")
            continue
        problem = _address_problem(parsed.host, ctx, allow_private)
        if problem is not None:
            dropped.append(f"{addr}: {problem}")
            continue
        if len(kept) >= max_addrs:
            dropped.append(f"{addr}: over the cap of {max_addrs}")
            continue
        v = "ip6" if ":" in parsed.host else "ip4"
        kept.append(Candidate(parsed.host, parsed.port,
                              Multiaddr(f"/{v}/{parsed.host}/udp/{parsed.port}/quic-v1")))
    return kept, dropped


def punch_payload(rng: random.Random, size: tuple[int, int]) -> bytes:
    """Random bytes, ``size`` bounds inclusive, that no endpoint mistakes
    for a datagram of its own: never a QUIC packet (fixed bit clear) nor
    STUN (top bits set), so a receiver drops it as noise at the first byte."""
    payload = bytearray(rng.randbytes(rng.randint(*size)))
    payload[0] = (payload[0] & ~0x40 & 0xFF) | 0x80
    return bytes(payload)


# -- actions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendMessage:
    message: HolePunch


@dataclass(frozen=True, slots=True)
class SendPunchPackets:
    """Send ``payload`` once to each address from the listening socket;
    the core asks again at its next deadline until ``until``."""

    addrs: tuple[Candidate, ...]
    payload: bytes
    until: float


@dataclass(frozen=True, slots=True)
class Dial:
    """Dial the addresses as the QUIC client, within ``timeout`` seconds,
    and report with ``on_dial_result``; an ``early`` dial runs in the
    background and is not reported (its success shows as a direct
    connection, ``on_direct_connection``)."""

    addrs: tuple[Candidate, ...]
    timeout: float
    early: bool = False


@dataclass(frozen=True, slots=True)
class Succeeded:
    attempt: int
    rtt: float | None
    """The relayed round trip the attempt was timed with (initiator)."""


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    attempts: int
    protocol_error: bool = False
    """The peer broke the protocol: the driver resets the stream."""


Action = SendMessage | SendPunchPackets | Dial | Succeeded | Failed


class _State(Enum):
    IDLE = "idle"
    AWAIT_CONNECT = "await connect"
    AWAIT_SYNC = "await sync"
    SYNC_WAIT = "waiting rtt/2"
    PUNCHING = "punching"
    DIALING = "dialing"
    BACKOFF = "backoff"
    DONE = "done"


@dataclass(slots=True)
class _Common:
    config: DcutrConfig
    own_addrs: tuple[bytes, ...]
    ctx: AddrContext
    rng: random.Random
    state: _State = _State.IDLE
    attempt: int = 0
    deadline: float | None = None
    peer_addrs: tuple[Candidate, ...] = ()
    dropped: list[str] = field(default_factory=list)
    outcome: Succeeded | Failed | None = None

    def finish(self, result: Succeeded | Failed) -> list[Action]:
        self.state = _State.DONE
        self.deadline = None
        self.outcome = result
        return [result]

    def fail(self, reason: str, protocol_error: bool = False) -> list[Action]:
        return self.finish(Failed(reason, self.attempt, protocol_error))

    def take_addrs(self, message: HolePunch) -> bool:
        kept, dropped = filter_addrs(message.addrs, self.ctx, max_addrs=self.config.max_addrs,
                                     allow_private=self.config.allow_private)
        self.peer_addrs = tuple(kept)
        self.dropped = dropped
        return bool(kept)

    def no_addrs_reason(self) -> str:
        why = "; ".join(self.dropped[:4]) or "it sent none"
        return f"no usable address from the peer ({why})"


class DcutrInitiator:
    """The side dialled through the relay: CONNECT, time the RTT, SYNC, and
    after RTT/2 punch; the peer's QUIC dial arriving is success."""

    def __init__(self, config: DcutrConfig, own_addrs: Sequence[bytes], ctx: AddrContext,
                 rng: random.Random) -> None:
        self._c = _Common(config, tuple(own_addrs)[:MAX_ADDRS], ctx, rng)
        self._sent_at = 0.0
        self._rtt: float | None = None
        self._punch_until = 0.0

    @property
    def state(self) -> str:
        return self._c.state.value

    @property
    def outcome(self) -> Succeeded | Failed | None:
        return self._c.outcome

    @property
    def rtt(self) -> float | None:
        return self._rtt

    @property
    def attempt(self) -> int:
        return self._c.attempt

    @property
    def peer_addrs(self) -> tuple[Candidate, ...]:
        return self._c.peer_addrs

    @property
    def dropped(self) -> list[str]:
        return list(self._c.dropped)

    def next_deadline(self) -> float | None:
        return self._c.deadline

    def start(self, now: float) -> list[Action]:
        if self._c.state is not _State.IDLE:
            raise RuntimeError("start() once")
        return self._connect(now)

    def _connect(self, now: float) -> list[Action]:
        c = self._c
        c.attempt += 1
        c.state = _State.AWAIT_CONNECT
        c.deadline = now + c.config.message_timeout
        self._sent_at = now
        return [SendMessage(HolePunch(MessageType.CONNECT, c.own_addrs))]

    def on_message(self, message: HolePunch, now: float) -> list[Action]:
        c = self._c
        if c.state is _State.DONE:
            return []
        if c.state is not _State.AWAIT_CONNECT or message.type is not MessageType.CONNECT:
            return c.fail(f"unexpected {message.type.name} while {c.state.value}",
                          protocol_error=True)
        self._rtt = max(0.0, now - self._sent_at)
        if not c.take_addrs(message):
            return c.fail(c.no_addrs_reason())
        c.state = _State.SYNC_WAIT
        c.deadline = now + min(self._rtt / 2, c.config.max_sync_delay)
        return [SendMessage(HolePunch(MessageType.SYNC))]

    def note_reply(self, now: float) -> None:
        """The peer's CONNECT arrived at ``now``: keep the round trip even
        when the driver stops the exchange there (``on_message`` is not
        called then)."""
        if self._c.state is _State.AWAIT_CONNECT:
            self._rtt = max(0.0, now - self._sent_at)

    def on_timer(self, now: float) -> list[Action]:
        c = self._c
        if c.deadline is None or now < c.deadline:
            return []
        if c.state is _State.AWAIT_CONNECT:
            return c.fail("the peer did not answer CONNECT in time")
        if c.state is _State.SYNC_WAIT:
            c.state = _State.PUNCHING
            self._punch_until = now + c.config.punch_duration
            return self._burst(now)
        if c.state is _State.PUNCHING:
            if now < self._punch_until:
                return self._burst(now)
            if c.attempt >= c.config.max_attempts:
                return c.fail(f"no direct connection after {c.attempt} attempts")
            c.state = _State.BACKOFF
            c.deadline = now + c.config.retry_backoff * 2 ** (c.attempt - 1)
            return []
        if c.state is _State.BACKOFF:
            return self._connect(now)
        return []

    def _burst(self, now: float) -> list[Action]:
        c = self._c
        low, high = c.config.punch_interval
        c.deadline = min(now + c.rng.uniform(low, high), self._punch_until)
        payload = punch_payload(c.rng, c.config.punch_payload)
        return [SendPunchPackets(c.peer_addrs, payload, self._punch_until)]

    def on_direct_connection(self, now: float) -> list[Action]:
        """A direct connection to the peer was adopted (its QUIC dial came
        through, or any other way): the upgrade is done."""
        c = self._c
        if c.state in (_State.DONE, _State.IDLE):
            return []
        return c.finish(Succeeded(c.attempt, self._rtt))

    def on_closed(self, now: float, error: str | None = None) -> list[Action]:
        """The stream ended (EOF, reset, or a malformed message: ``error``)."""
        c = self._c
        if c.state is _State.DONE:
            return []
        if error is not None:
            return c.fail(error, protocol_error=True)
        # The responder closes after its last dial failed: say what failed.
        tried = c.attempt if c.state is not _State.AWAIT_CONNECT else c.attempt - 1
        if tried >= 1:
            return c.fail(f"no direct connection after {tried} attempts; the peer stopped")
        return c.fail("the peer closed the DCUtR stream")


class DcutrResponder:
    """The dialling side: answer CONNECT with CONNECT, dial on SYNC."""

    def __init__(self, config: DcutrConfig, own_addrs: Sequence[bytes], ctx: AddrContext,
                 rng: random.Random, now: float) -> None:
        self._c = _Common(config, tuple(own_addrs)[:MAX_ADDRS], ctx, rng)
        self._c.state = _State.AWAIT_CONNECT
        self._c.deadline = now + config.message_timeout

    @property
    def state(self) -> str:
        return self._c.state.value

    @property
    def outcome(self) -> Succeeded | Failed | None:
        return self._c.outcome

    @property
    def attempt(self) -> int:
        return self._c.attempt

    @property
    def peer_addrs(self) -> tuple[Candidate, ...]:
        return self._c.peer_addrs

    @property
    def dropped(self) -> list[str]:
        return list(self._c.dropped)

    def next_deadline(self) -> float | None:
        return self._c.deadline

    def on_message(self, message: HolePunch, now: float) -> list[Action]:
        c = self._c
        if c.state is _State.DONE:
            return []
        if c.state is _State.AWAIT_CONNECT and message.type is MessageType.CONNECT:
            if c.attempt >= c.config.max_attempts:
                return c.fail(f"the peer asked for attempt {c.attempt + 1} of "
                              f"{c.config.max_attempts}", protocol_error=True)
            c.attempt += 1
            if not c.take_addrs(message):
                return c.fail(c.no_addrs_reason())
            c.state = _State.AWAIT_SYNC
            c.deadline = now + c.config.message_timeout
            answer: list[Action] = [SendMessage(HolePunch(MessageType.CONNECT, c.own_addrs))]
            if c.config.early_dial:
                answer.append(Dial(c.peer_addrs, c.config.dial_timeout, early=True))
            return answer
        if c.state is _State.AWAIT_SYNC and message.type is MessageType.SYNC:
            c.state = _State.DIALING
            c.deadline = None  # the driver's dial has its own timeout
            return [Dial(c.peer_addrs, c.config.dial_timeout)]
        return c.fail(f"unexpected {message.type.name} while {c.state.value}",
                      protocol_error=True)

    def on_dial_result(self, ok: bool, now: float) -> list[Action]:
        c = self._c
        if c.state is not _State.DIALING:
            return []
        if ok:
            return c.finish(Succeeded(c.attempt, None))
        if c.attempt >= c.config.max_attempts:
            return c.fail(f"no direct connection after {c.attempt} attempts")
        # The initiator starts the next attempt after its punch window.
        c.state = _State.AWAIT_CONNECT
        c.deadline = now + c.config.punch_duration + c.config.message_timeout
        return []

    def on_direct_connection(self, now: float) -> list[Action]:
        c = self._c
        if c.state is _State.DONE:
            return []
        return c.finish(Succeeded(c.attempt, None))

    def on_timer(self, now: float) -> list[Action]:
        c = self._c
        if c.deadline is None or now < c.deadline:
            return []
        return c.fail(f"the peer went silent while {c.state.value}")

    def on_closed(self, now: float, error: str | None = None) -> list[Action]:
        c = self._c
        if c.state is _State.DONE:
            return []
        if error is not None:
            return c.fail(error, protocol_error=True)
        if c.attempt >= 1 and c.state is _State.AWAIT_CONNECT:
            return c.fail(f"no direct connection after {c.attempt} attempts; the peer stopped")
        return c.fail("the peer closed the DCUtR stream")


class PunchLimiter:
    """At most ``sessions_per_peer`` sessions per ``session_window`` per
    peer (a token bucket each), so a peer cannot make us punch at will."""

    def __init__(self, config: DcutrConfig, max_peers: int = 4096) -> None:
        self._limiter = RateLimiter(config.sessions_per_peer / config.session_window,
                                    config.sessions_per_peer, max_peers)

    def allow(self, peer: Hashable, now: float) -> bool:
        return self._limiter.allow(peer, now)
