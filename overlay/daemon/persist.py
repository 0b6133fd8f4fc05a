"""The daemon's peer memory, ``<home>/peers.json``: routing-table contacts
and peerstore addresses that outlive a restart (pure: no I/O here).

Without it a restarted node with no bootstrap list — an introduction node —
would know nobody.  The file is versioned JSON::

    {"version": 1, "saved_at": 1764864000.0,
     "peers": [{"peer_id": "12D3…", "addrs": ["/ip4/…/udp/4001/quic-v1"],
                "last_seen": 1764863990.0, "dht_server": true}]}

A snapshot merges what the node knows now with what it loaded: a peer
that is unreachable for a while is kept until ``max_age`` has passed, so a
short outage on either side does not wipe the memory.

The envelope is ``overlay.statefile``'s (``"format": "overlay-peers"``);
files of version 1 written before it carried a format are still read.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from overlay.daemon.errors import DaemonError
from overlay.errors import InvalidMultiaddr, InvalidPeerId
from overlay.identity import PeerId
from overlay.multiaddrs import parse_quic_multiaddr
from overlay.statefile import CorruptState

__all__ = [
    "PEERS_FORMAT",
    "PEERS_VERSION",
    "PeerMemoryConfig",
    "PeerStateError",
    "SavedPeer",
    "bootstrap_addrs",
    "decode_peers",
    "encode_peers",
    "merge_peers",
]

PEERS_VERSION = 1
PEERS_FORMAT = "overlay-peers"


class PeerStateError(DaemonError, CorruptState):
    """``peers.json`` is unreadable or of another version; it is ignored."""


@dataclass(frozen=True, slots=True)
class PeerMemoryConfig:
    file: str = "peers.json"
    """Relative to the data directory."""
    save_interval: float = 300.0
    """Seconds between saves while running (and one at shutdown); an
    unchanged memory is not rewritten."""
    max_peers: int = 256
    """Peers kept, most recently seen first."""
    max_addrs: int = 8
    """Addresses kept per peer."""
    max_age: float = 7 * 24 * 3600.0
    """Seconds a peer not seen again is remembered."""
    max_file_bytes: int = 1 << 20
    """A larger file is refused unread."""

    def __post_init__(self) -> None:
        if not self.file or not self.save_interval > 0 or not self.max_age > 0:
            raise ValueError("file, save_interval and max_age must be set and positive")
        if self.max_peers < 1 or self.max_addrs < 1 or self.max_file_bytes < 1024:
            raise ValueError("peer memory limits must be positive")


@dataclass(frozen=True, slots=True)
class SavedPeer:
    peer_id: PeerId
    addrs: tuple[str, ...]
    """QUIC multiaddrs without ``/p2p``, dialable (no wildcard address)."""
    last_seen: float
    """Unix time the node last knew the peer as live."""
    dht_server: bool = False
    """The peer was in the routing table (a DHT server)."""


def _dialable(text: str) -> str | None:
    """``text`` without ``/p2p``, or None for what cannot be dialed."""
    try:
        parsed = parse_quic_multiaddr(text)
    except InvalidMultiaddr:
        return None
    if not parsed.is_dns:
        address = ipaddress.ip_address(parsed.host)
        if address.is_unspecified or address.is_multicast or parsed.port == 0:
            return None
    return str(parsed.with_peer_id(None).to_multiaddr())


def clean_addrs(addrs: Iterable[str], limit: int) -> tuple[str, ...]:
    """Dialable, deduplicated, at most ``limit``, in the given order."""
    out: list[str] = []
    for text in addrs:
        clean = _dialable(text)
        if clean is not None and clean not in out:
            out.append(clean)
            if len(out) == limit:
                break
    return tuple(out)


def merge_peers(current: Iterable[SavedPeer], remembered: Iterable[SavedPeer],
                config: PeerMemoryConfig, now: float, own: PeerId) -> list[SavedPeer]:
    """What to save: the live view wins; remembered peers stay until
    ``max_age``; most recently seen first, DHT servers first among equals,
    capped at ``max_peers``."""
    merged: dict[PeerId, SavedPeer] = {}
    for peer in current:
        addrs = clean_addrs(peer.addrs, config.max_addrs)
        if peer.peer_id != own and addrs:
            merged[peer.peer_id] = SavedPeer(peer.peer_id, addrs, peer.last_seen, peer.dht_server)
    for peer in remembered:
        if peer.peer_id == own or peer.peer_id in merged or now - peer.last_seen > config.max_age:
            continue
        addrs = clean_addrs(peer.addrs, config.max_addrs)
        if addrs:
            merged[peer.peer_id] = SavedPeer(peer.peer_id, addrs, peer.last_seen, peer.dht_server)
    ordered = sorted(merged.values(),
                     key=lambda p: (-p.last_seen, not p.dht_server, str(p.peer_id)))
    return ordered[: config.max_peers]


def encode_peers(peers: Sequence[SavedPeer], saved_at: float) -> bytes:
    document = {
        "format": PEERS_FORMAT,
        "version": PEERS_VERSION,
        "saved_at": round(saved_at, 3),
        "peers": [{"peer_id": str(p.peer_id), "addrs": list(p.addrs),
                   "last_seen": round(p.last_seen, 3), "dht_server": p.dht_server}
                  for p in peers],
    }
    return (json.dumps(document, indent=1) + "\n").encode("utf-8")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def decode_peers(data: bytes, config: PeerMemoryConfig) -> list[SavedPeer]:
    """Parse ``peers.json``; ``PeerStateError`` for another version or a
    broken file.  Entries that do not parse are skipped one by one."""
    if len(data) > config.max_file_bytes:
        raise PeerStateError(f"peer memory is {len(data)} bytes, over {config.max_file_bytes}")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PeerStateError(f"peer memory is not JSON: {exc}") from exc
    if isinstance(document, dict) and document.get("format", PEERS_FORMAT) != PEERS_FORMAT:
        raise PeerStateError("peer memory is a file of another format")
    if not isinstance(document, dict) or document.get("version") != PEERS_VERSION:
        version = document.get("version") if isinstance(document, dict) else None
        raise PeerStateError(f"peer memory has version {version!r}; this overlay reads "
                             f"version {PEERS_VERSION}")
    entries = document.get("peers")
    if not isinstance(entries, list):
        raise PeerStateError("peer memory has no `peers` list")
    peers: list[SavedPeer] = []
    for entry in entries:  # bounded by max_file_bytes
        if len(peers) == config.max_peers:
            break
        if not isinstance(entry, dict):
            continue
        raw_addrs = entry.get("addrs")
        last_seen = _number(entry.get("last_seen"))
        if not isinstance(raw_addrs, list) or last_seen is None:
            continue
        try:
            peer = PeerId.from_string(str(entry.get("peer_id")))
        except (InvalidPeerId, ValueError):
            continue
        addrs = clean_addrs((a for a in raw_addrs if isinstance(a, str)), config.max_addrs)
        if addrs:
            peers.append(SavedPeer(peer, addrs, last_seen, entry.get("dht_server") is True))
    return peers


def bootstrap_addrs(peers: Iterable[SavedPeer], own: PeerId,
                    skip: Iterable[str] = ()) -> list[str]:
    """Full multiaddrs (``/p2p/<id>``) to bootstrap from, DHT servers first;
    ``skip`` lists addresses already configured."""
    known = set(skip)
    out: list[str] = []
    for peer in sorted(peers, key=lambda p: not p.dht_server):
        if peer.peer_id == own:
            continue
        for addr in peer.addrs:
            full = f"{addr}/p2p/{peer.peer_id}"
            if full not in known:
                known.add(full)
                out.append(full)
    return out
