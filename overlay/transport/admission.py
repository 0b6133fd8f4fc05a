"""Which inbound QUIC Initials may create a connection, by source (pure).

The endpoint asks ``Admission.decide`` about every client Initial that
would create a connection, and tells it when an admitted connection
finishes its handshake or closes.  Three scopes are counted at once, as
STYLE rule 17 asks: the whole endpoint (its caller passes those counts),
the client's IP address, and the client's network (``source_key``: /24 for
IPv4, /48 for IPv6, each loopback address on its own).

The verdicts, in the order they are checked:

1. ``DROP`` at ``max_connections`` (the endpoint is full).
2. ``RETRY`` for an Initial whose address is not validated yet (no valid
   Retry token) while ``retry_threshold`` handshakes are in progress, or
   while its IP holds half of ``max_handshakes_per_ip``.
3. ``DROP`` at ``max_handshakes``, or at ``max_handshakes_per_ip`` for the
   IP: a client retransmits its Initial and may find room later.
4. ``REFUSE`` at ``max_connections_per_ip`` or ``max_connections_per_prefix``:
   the endpoint answers CONNECTION_REFUSED, so the client fails at once.
5. ``ACCEPT``.

Sources exempt from the per-source limits (``exempt_own_address``) skip
the per-IP and per-prefix checks and are not counted in them.

No clock, no I/O: the caller counts hits and logs.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from overlay.limits import ScopedCounter, source_key
from overlay.transport.config import TransportConfig

__all__ = ["Admission", "Decision", "Source", "Verdict", "normalise_ip"]


class Verdict(enum.Enum):
    ACCEPT = "accept"
    RETRY = "retry"
    """Answer with a Retry packet carrying an address-validation token."""
    DROP = "drop"
    """Ignore the Initial (the client will retransmit it)."""
    REFUSE = "refuse"
    """Answer with CONNECTION_CLOSE (CONNECTION_REFUSED)."""


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    cause: str | None = None
    """The limit that decided it (a ``LimitHits`` cause), None for ACCEPT."""


ACCEPT = Decision(Verdict.ACCEPT)


@dataclass(frozen=True, slots=True)
class Source:
    """Where an inbound connection comes from, in each scope."""

    ip: str
    prefix: str
    exempt: bool


def normalise_ip(ip: str) -> str:
    """``ip`` without IPv6 zone, an IPv4-mapped IPv6 address as IPv4."""
    text = ip.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def _exempt_addresses(local_ip: str) -> frozenset[str]:
    own = normalise_ip(local_ip)
    try:
        unspecified = ipaddress.ip_address(own).is_unspecified
    except ValueError:
        return frozenset()
    if unspecified:
        return frozenset({"127.0.0.1", "::1"})
    return frozenset({own})


class Admission:
    """Per-source counts of inbound handshakes and connections."""

    __slots__ = ("_config", "_exempt", "_retry_share", "_handshakes", "_per_ip", "_per_prefix")

    def __init__(self, config: TransportConfig, local_ip: str) -> None:
        self._config = config
        self._exempt = _exempt_addresses(local_ip) if config.exempt_own_address else frozenset()
        self._retry_share = max(1, config.max_handshakes_per_ip // 2)
        self._handshakes = ScopedCounter(config.max_handshakes_per_ip)
        self._per_ip = ScopedCounter(config.max_connections_per_ip)
        self._per_prefix = ScopedCounter(config.max_connections_per_prefix)

    def source(self, ip: str) -> Source:
        ip = normalise_ip(ip)
        return Source(ip, source_key(ip), ip in self._exempt)

    def handshakes_from(self, ip: str) -> int:
        """Inbound handshakes in progress from ``ip`` (0 for exempt ones)."""
        return self._handshakes.held(normalise_ip(ip))

    def connections_from(self, ip: str) -> int:
        """Inbound connections from ``ip`` (0 for exempt ones)."""
        return self._per_ip.held(normalise_ip(ip))

    def decide(
        self, source: Source, *, validated: bool, handshakes: int, connections: int
    ) -> Decision:
        """What to do with a client Initial from ``source``; ``validated``:
        it carried a valid Retry token.  ``handshakes`` and ``connections``
        are the endpoint's inbound handshakes in progress and its live
        connections."""
        config = self._config
        if connections >= config.max_connections:
            return Decision(Verdict.DROP, "quic.connections")
        half_open = 0 if source.exempt else self._handshakes.held(source.ip)
        if not validated:
            if handshakes >= config.retry_threshold:
                return Decision(Verdict.RETRY, "quic.retry")
            if half_open >= self._retry_share:
                return Decision(Verdict.RETRY, "quic.retry_per_ip")
        if handshakes >= config.max_handshakes:
            return Decision(Verdict.DROP, "quic.handshakes")
        if source.exempt:
            return ACCEPT
        if half_open >= config.max_handshakes_per_ip:
            return Decision(Verdict.DROP, "quic.handshakes_per_ip")
        if not self._per_ip.has_room(source.ip):
            return Decision(Verdict.REFUSE, "quic.connections_per_ip")
        if not self._per_prefix.has_room(source.prefix):
            return Decision(Verdict.REFUSE, "quic.connections_per_prefix")
        return ACCEPT

    def opened(self, source: Source) -> None:
        """An accepted Initial created a connection: it holds a handshake
        slot and a connection slot of its source until released."""
        if source.exempt:
            return
        self._handshakes.acquire(source.ip)
        self._per_ip.acquire(source.ip)
        self._per_prefix.acquire(source.prefix)

    def established(self, source: Source) -> None:
        """The connection's handshake completed: its handshake slot is free."""
        if not source.exempt:
            self._handshakes.release(source.ip)

    def closed(self, source: Source, *, handshaking: bool) -> None:
        """The connection closed (``handshaking``: before it completed)."""
        if source.exempt:
            return
        if handshaking:
            self._handshakes.release(source.ip)
        self._per_ip.release(source.ip)
        self._per_prefix.release(source.prefix)
