"""Shared helpers for the naming tests: deterministic keys, a tiny proof-of-work
difficulty and a record factory."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from overlay.identity import Ed25519PrivateKey, PeerId, PrivateKey
from overlay.naming import NamingConfig, NameRecord, make_record, solve_pow
from overlay.naming.record import PeerTarget

NOW = 1_800_000_000.0
BITS = 8
CONFIG = NamingConfig(pow_bits=BITS)


def key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_seed(seed.to_bytes(32, "big"))


def owner_of(private: PrivateKey) -> bytes:
    return private.public_key().to_protobuf()


def nonce_for(name: str, private: PrivateKey, bits: int = BITS) -> int:
    return solve_pow(name, owner_of(private), bits, random.Random(name))


def record(
    private: PrivateKey,
    name: str = "alice.ovl",
    *,
    sequence: int = 1,
    expires: float = NOW + 3600,
    ttl: int = 300,
    **extra: Any,
) -> NameRecord:
    extra.setdefault("pow_nonce", nonce_for(name, private))
    if "peers" not in extra:
        peer = PeerId.from_public_key(private.public_key())
        addr = bytes.fromhex("047f000001910210a1cd03")  # /ip4/127.0.0.1/udp/4001/quic-v1
        extra["peers"] = (PeerTarget(peer.to_bytes(), (addr,)),)
    return make_record(
        private, name, sequence=sequence, expires=int(expires), ttl=ttl, **extra
    )
