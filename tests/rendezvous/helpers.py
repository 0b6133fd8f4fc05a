"""Keys, signed records and registries at a fixed `now` for rendezvous tests."""

from __future__ import annotations

from multiaddr import Multiaddr

from overlay.identity import Ed25519PrivateKey, PeerId, PeerRecord, seal_peer_record
from overlay.rendezvous import Register, Registry, RegistryConfig

NOW = 1_800_000_000.0
SECRET = b"s" * 32


def key(n: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_seed(n.to_bytes(32, "big"))


def peer(n: int) -> PeerId:
    return PeerId.from_public_key(key(n).public_key())


def addr(n: int) -> bytes:
    return Multiaddr(f"/ip4/10.0.{n // 256}.{n % 256}/udp/4001/quic-v1").to_bytes()


def record(n: int, *, signer: int | None = None, addrs: tuple[bytes, ...] | None = None,
           seq: int = 1) -> bytes:
    """Peer ``n``'s signed record (signed by ``signer``'s key if given:
    the record then names ``signer``, since a key signs only its own)."""
    who = n if signer is None else signer
    return seal_peer_record(key(who), PeerRecord(peer(who), seq,
                                                 (addr(n),) if addrs is None else addrs))


def reg(n: int, ns: str = "app", ttl: int | None = None) -> Register:
    return Register(ns, record(n), ttl)


def registry(**overrides: int) -> Registry:
    return Registry(RegistryConfig(**overrides), secret=SECRET)
