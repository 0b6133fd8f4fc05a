"""The 256-bit Kademlia key space: keys, XOR distance, bucket indexes and
the routing table's notion of a contact.

Keys are Python ints: XOR and ``bit_length`` on ints are the cheapest way
to compare distances, which matters when the simulator runs 100,000 nodes.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from overlay.identity import PeerId
from overlay.kad.addrs import ip_groups

__all__ = [
    "KEY_BITS",
    "Contact",
    "kad_key",
    "peer_key",
    "distance",
    "bucket_index",
    "random_key_in_bucket",
    "random_peer_id_in_bucket",
    "fake_peer_id",
]

KEY_BITS = 256


def kad_key(data: bytes) -> int:
    """The key of a peer ID's multihash or a record key: SHA-256 as an int."""
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


def peer_key(peer: PeerId) -> int:
    return kad_key(peer.multihash)


def distance(a: int, b: int) -> int:
    return a ^ b


def bucket_index(local: int, other: int) -> int:
    """Bucket ``i`` holds keys at distance ``[2**i, 2**(i+1))``: 255 is the
    farthest half of the space.  The local key itself has index -1."""
    return (local ^ other).bit_length() - 1


def random_key_in_bucket(local: int, index: int, rng: random.Random) -> int:
    if not 0 <= index < KEY_BITS:
        raise ValueError(f"bucket index {index} outside 0..{KEY_BITS - 1}")
    return local ^ ((1 << index) | rng.getrandbits(index) if index else 1)


def fake_peer_id(rng: random.Random) -> PeerId:
    """A well-formed sha2-256 peer ID without a key behind it: simulations
    and refresh targets need the ID only, and minting one costs no keygen."""
    return PeerId(b"\x12\x20" + rng.getrandbits(256).to_bytes(32, "big"))


def random_peer_id_in_bucket(
    local: int, index: int, rng: random.Random, max_tries: int = 1 << 20
) -> PeerId:
    """A peer ID whose key falls in bucket ``index`` of ``local``.

    FIND_NODE carries a peer ID, not a key, and SHA-256 cannot be inverted,
    so this draws IDs until one lands: about ``2**(256-index)`` tries, which
    is why refresh stops at common-prefix length 15 (as go-libp2p does)."""
    low, high = 1 << index, 1 << (index + 1)
    for _ in range(max_tries):
        multihash = b"\x12\x20" + rng.getrandbits(256).to_bytes(32, "big")
        if low <= local ^ kad_key(multihash) < high:
            return PeerId(multihash)
    raise ValueError(f"no peer ID found for bucket {index} in {max_tries} tries")


@dataclass(frozen=True, slots=True)
class Contact:
    """A DHT server as the routing table and lookups know it.

    Contacts are immutable so that one object can sit in many routing
    tables at once (the simulator shares them between 100,000 nodes)."""

    peer_id: PeerId
    key: int
    addrs: tuple[bytes, ...] = ()
    ip_groups: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, peer_id: PeerId, addrs: tuple[bytes, ...] = ()) -> Contact:
        return cls(peer_id, peer_key(peer_id), addrs, ip_groups(addrs))
