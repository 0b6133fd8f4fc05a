"""The STUN agent of one socket, without I/O: client transactions and, when
enabled, the binding responder with its per-source rate limit.

The driver hands it every non-QUIC datagram of its endpoint
(``on_datagram``) and its timer (``on_timer`` at ``next_deadline``), and
carries out the ``SendDatagram`` actions it returns; results come back as
``BindingSucceeded`` / ``BindingFailed`` / ``BindingTimedOut``.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from dataclasses import dataclass

from overlay.errors import DecodeError
from overlay.nat.stun import (
    Address,
    BindingAction,
    BindingRequest,
    BindingTransaction,
    RetransmitConfig,
    SendDatagram,
    decode_stun,
    encode_binding_response,
)

__all__ = ["AgentConfig", "StunAgent", "RateLimiter", "normalize_address"]


def normalize_address(addr: Address) -> Address:
    """The text form the kernel reports (compressed IPv6), so a response's
    source compares equal to the server it was sent to."""
    return (str(ipaddress.ip_address(addr[0])), int(addr[1]))


@dataclass(frozen=True, slots=True)
class AgentConfig:
    serve: bool = False
    """Answer binding requests (introducers do)."""
    responses_per_second: float = 10.0
    """Sustained binding responses per source IP; a STUN response is about
    the size of its request, but an unlimited reflector is still a tool
    for flooding a spoofed source."""
    response_burst: int = 20
    """Responses a source IP may get at once before the rate applies."""
    total_responses_per_second: float = 1000.0
    """Sustained responses to all sources together."""
    max_sources: int = 4096
    """Source IPs whose budgets are remembered; the least recent is forgotten."""
    max_transactions: int = 64
    """Client transactions in flight on one socket."""
    retransmit: RetransmitConfig = RetransmitConfig()

    def __post_init__(self) -> None:
        if not (self.responses_per_second > 0 and self.total_responses_per_second > 0):
            raise ValueError("response rates must be positive")
        if self.response_burst < 1 or self.max_sources < 1 or self.max_transactions < 1:
            raise ValueError("response_burst, max_sources and max_transactions must be >= 1")


class RateLimiter:
    """Token buckets per key plus one shared bucket, at time ``now``."""

    def __init__(self, rate: float, burst: int, total_rate: float, max_keys: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._total_rate = total_rate
        self._total_burst = max(float(burst), total_rate)
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._total: tuple[float, float] | None = None

    def allow(self, key: str, now: float) -> bool:
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        total, total_last = self._total or (self._total_burst, now)
        total = min(self._total_burst, total + (now - total_last) * self._total_rate)
        allowed = tokens >= 1 and total >= 1
        if allowed:
            tokens -= 1
            total -= 1
        self._buckets[key] = (tokens, now)
        self._total = (total, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return allowed


class StunAgent:
    """STUN on one socket; see the module docstring."""

    def __init__(self, rng: random.Random, config: AgentConfig | None = None) -> None:
        self.config = config or AgentConfig()
        self._rng = rng
        self._transactions: dict[bytes, BindingTransaction] = {}
        self._limiter = RateLimiter(self.config.responses_per_second, self.config.response_burst,
                                    self.config.total_responses_per_second,
                                    self.config.max_sources)
        self.answered = 0
        self.refused = 0
        self.dropped = 0
        """Datagrams that were not STUN we could use (junk, probes)."""

    @property
    def in_flight(self) -> int:
        return len(self._transactions)

    def begin(self, server: Address, now: float, *, change_ip: bool = False,
              change_port: bool = False) -> list[BindingAction]:
        """Start a binding request to ``server`` (an IP literal and port);
        returns the first send.  Raises ``ValueError`` when too many are in
        flight (the caller asks again later)."""
        if len(self._transactions) >= self.config.max_transactions:
            raise ValueError(f"{len(self._transactions)} STUN transactions already in flight")
        tx = BindingTransaction(normalize_address(server), self._rng, now,
                                self.config.retransmit, change_ip=change_ip,
                                change_port=change_port)
        self._transactions[tx.transaction_id] = tx
        return tx.on_timer(now)

    def next_deadline(self) -> float | None:
        deadlines = [d for tx in self._transactions.values()
                     if (d := tx.next_deadline()) is not None]
        return min(deadlines, default=None)

    def on_timer(self, now: float) -> list[BindingAction]:
        actions: list[BindingAction] = []
        for tid, tx in list(self._transactions.items()):
            actions += tx.on_timer(now)
            if tx.done:
                del self._transactions[tid]
        return actions

    def on_datagram(self, data: bytes, source: Address, now: float) -> list[BindingAction]:
        try:
            message = decode_stun(data)
        except DecodeError:
            self.dropped += 1
            return []
        if isinstance(message, BindingRequest):
            if not self.config.serve:
                self.dropped += 1
                return []
            if not self._limiter.allow(source[0], now):
                self.refused += 1
                return []
            self.answered += 1
            return [SendDatagram(encode_binding_response(message.transaction_id, source), source)]
        tx = self._transactions.get(message.transaction_id)
        if tx is None:
            self.dropped += 1
            return []
        actions = tx.on_response(message, source, now)
        if tx.done:
            del self._transactions[message.transaction_id]
        return actions
