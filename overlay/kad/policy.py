"""Who stays in the routing table when requests fail or peers leave (pure).

Events in, decisions out; the network service and the simulator both
drive it, so the simulator's figures describe the node that ships.

- A request that failed outright (dial refused or unreachable, the kad
  protocol refused, the wrong peer answered, the connection lost or a
  malformed answer) evicts the peer at once, with a replacement from the
  cache.  A stream reset on a live connection is a refusal of that one
  request (a record the peer rejects, or its limits: an overloaded server
  resets new streams right after negotiation and keeps the connection,
  ``overlay.kad.net_server``), not a failure of the peer: overload is not
  death.
- A request that timed out evicts too when no connection is left; on a
  live connection the peer may just be busy, so it is probed once
  (``ProbeConnection``) and evicted if the probe fails as well.
- A peer that announced its departure (QUIC close with ``GOING_AWAY``) is
  evicted at once; a table peer whose connection died of silence (the
  idle timeout) is checked (``CheckPeer``); a connection either side just
  closed says the peer was alive.
- Evicted peers are "recently failed" (``RoutingTable.mark_failed``): not
  asked again when others name them, until they answer by themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from overlay.errors import (
    DialError,
    HandshakeError,
    LimitExceeded,
    LocalProtocolError,
    NegotiationError,
    PeerIdMismatch,
    StreamReset,
)
from overlay.identity import PeerId
from overlay.kad.keyspace import Contact
from overlay.kad.routing import RoutingTable

__all__ = [
    "FailureKind",
    "classify_failure",
    "describe_failure",
    "CheckPeer",
    "ProbeConnection",
    "NodePolicy",
]


class FailureKind(Enum):
    UNREACHABLE = "unreachable"
    """No connection could be made (refused, no route, handshake silent)."""
    MISMATCH = "peer-id-mismatch"
    """Someone else answers at that address."""
    REFUSED = "protocol-refused"
    """The peer does not speak our kad protocol."""
    RESET = "reset"
    """The peer reset the stream: it refused this request (a record it
    does not accept, a limit), which says nothing bad about it if the
    connection stays up."""
    BROKEN = "broken"
    """The connection broke, or the answer was malformed."""
    TIMEOUT = "timeout"
    """No answer within the request's timeout."""
    LOCAL = "local"
    """Our own limits or misuse: says nothing about the peer."""


def classify_failure(exc: BaseException) -> FailureKind:
    if isinstance(exc, DialError) and isinstance(exc.__cause__, PeerIdMismatch):
        return FailureKind.MISMATCH  # the host's summary of its dial attempts
    if isinstance(exc, TimeoutError):
        return FailureKind.TIMEOUT
    if isinstance(exc, LimitExceeded | LocalProtocolError):
        return FailureKind.LOCAL
    if isinstance(exc, PeerIdMismatch):
        return FailureKind.MISMATCH
    if isinstance(exc, DialError | HandshakeError | OSError):
        return FailureKind.UNREACHABLE
    if isinstance(exc, NegotiationError):
        return FailureKind.REFUSED
    if isinstance(exc, StreamReset):
        return FailureKind.RESET
    return FailureKind.BROKEN


def describe_failure(exc: BaseException, protocol: str) -> str:
    """A short human reason, for logs ("unreachable: …", "peer ID mismatch: …")."""
    kind = classify_failure(exc)
    detail = str(exc) or type(exc).__name__
    if kind is FailureKind.TIMEOUT:
        return "unreachable: no answer in time"
    if kind is FailureKind.REFUSED:
        return f"refused the kad protocol {protocol}"
    if kind is FailureKind.MISMATCH:
        return f"peer ID mismatch: {detail}"
    if kind is FailureKind.UNREACHABLE:
        return f"unreachable: {detail}"
    if kind is FailureKind.LOCAL:
        return f"not tried: {detail}"
    return f"failed: {detail}"


@dataclass(frozen=True, slots=True)
class CheckPeer:
    """Send ``contact`` one request with the short timeout; report the
    outcome with ``on_check_result``."""

    contact: Contact


@dataclass(frozen=True, slots=True)
class ProbeConnection:
    """``peer`` timed out on a live connection: ping it over that
    connection; report with ``on_check_result`` (and drop the connection
    if it failed)."""

    peer: PeerId


class NodePolicy:
    """Routing-table membership decisions of one node."""

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self.evictions = 0

    def on_request_failed(
        self, peer: PeerId, kind: FailureKind, *, connected: bool, now: float
    ) -> ProbeConnection | None:
        """A request to ``peer`` failed; ``connected`` if a connection to it
        is still open afterwards."""
        if kind is FailureKind.LOCAL:
            return None
        if kind is FailureKind.RESET and connected:
            return None  # alive, and it answered: with a refusal
        if kind is FailureKind.TIMEOUT and connected:
            return ProbeConnection(peer) if peer in self.table else None
        self._evict(peer, now)
        return None

    def on_closed(
        self, peer: PeerId, *, going_away: bool, silent: bool, now: float
    ) -> CheckPeer | None:
        """The last connection to ``peer`` closed: it announced its
        departure (``going_away``), fell ``silent`` (idle timeout), or
        either side simply closed it (alive, then: nothing to do)."""
        if going_away:
            self._evict(peer, now)
            return None
        contact = self.table.get(peer) if silent else None
        return CheckPeer(contact) if contact is not None else None

    def on_check_result(self, peer: PeerId, alive: bool, now: float) -> None:
        if not alive:
            self._evict(peer, now)

    def worth_asking(self, contacts: Iterable[Contact], now: float) -> list[Contact]:
        """Drop peers others still name although they failed us lately."""
        return [c for c in contacts if not self.table.recently_failed(c.peer_id, now)]

    def _evict(self, peer: PeerId, now: float) -> None:
        if peer in self.table:
            self.evictions += 1
        self.table.mark_failed(peer, now)
