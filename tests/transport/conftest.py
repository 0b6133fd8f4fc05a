"""Endpoints on real loopback sockets for the transport tests."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from overlay.identity import Ed25519PrivateKey, PeerId, PrivateKey
from overlay.transport import QuicConn, QuicEndpoint, TransportConfig


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


HOSTS = ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(
    not _ipv6_available(), reason="no IPv6 loopback"))]


def peer_of(key: PrivateKey) -> PeerId:
    return PeerId.from_public_key(key.public_key())


@dataclass
class Pair:
    """A dialer endpoint ``a`` connected to listener ``b``."""

    a: QuicEndpoint
    b: QuicEndpoint
    key_a: PrivateKey
    key_b: PrivateKey
    conn_a: QuicConn
    conn_b: QuicConn


async def make_pair(
    host: str = "127.0.0.1",
    config_a: TransportConfig | None = None,
    config_b: TransportConfig | None = None,
) -> Pair:
    key_a, key_b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    a = await QuicEndpoint.create(host, 0, key_a, config_a)
    b = await QuicEndpoint.create(host, 0, key_b, config_b)
    conn_a = await a.dial(b.local_address, peer_of(key_b))
    conn_b = await b.accept()
    return Pair(a, b, key_a, key_b, conn_a, conn_b)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    p = await make_pair()
    try:
        yield p
    finally:
        await p.a.aclose()
        await p.b.aclose()
