"""Why a DHT operation of the network service failed."""

from __future__ import annotations

from overlay.errors import LocalProtocolError, OverlayError
from overlay.identity import PeerId

__all__ = [
    "DhtOperationError",
    "ValueNotFound",
    "PeerNotFound",
    "QuorumFailed",
    "NoPeersKnown",
    "ServiceNotRunning",
]


class DhtOperationError(OverlayError):
    """A DHT operation ran but could not produce what was asked."""


class ValueNotFound(DhtOperationError):
    """No peer returned a valid record for the key."""

    def __init__(self, key: bytes) -> None:
        # Keys are text in every namespace we serve; show them as the user
        # typed them, and fall back to a repr only for binary keys.
        try:
            shown = key[:80].decode("utf-8")
        except UnicodeDecodeError:
            shown = repr(key[:80])
        super().__init__(f"no valid record found for {shown}")
        self.key = key


class PeerNotFound(DhtOperationError):
    """No address of the peer could be found through the DHT."""

    def __init__(self, peer: PeerId) -> None:
        super().__init__(f"no address found for peer {peer}")
        self.peer = peer


class QuorumFailed(DhtOperationError):
    """Fewer peers than required accepted a PUT or ADD_PROVIDER."""

    def __init__(self, needed: int, got: int) -> None:
        super().__init__(f"{got} peers accepted, {needed} needed")
        self.needed = needed
        self.got = got


class NoPeersKnown(DhtOperationError):
    """The routing table is empty: bootstrap first."""

    def __init__(self) -> None:
        super().__init__("the DHT routing table is empty (no bootstrap peer reachable?)")


class ServiceNotRunning(LocalProtocolError):
    """The kad service was used outside ``async with``."""
