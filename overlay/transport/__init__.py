"""QUIC transport: one UDP endpoint per address, libp2p TLS, byte streams.

aioquic's sans-IO ``QuicConnection`` is driven by our own datagram protocol
so that one socket serves dials, inbound connections and (through the
datagram hook) STUN and hole punching.  No background task is started:
everything runs in loop callbacks and in the coroutines that await results.

Use::

    endpoint = await QuicEndpoint.create("0.0.0.0", 4001, host_key, TransportConfig())
    conn = await endpoint.dial(("192.0.2.1", 4001), expected_peer)  # or endpoint.accept()
    stream = await conn.open_stream()          # or conn.accept_stream()
    stream.write(b"..."); await stream.drain(); await stream.close()
    await endpoint.aclose()

Errors: ``dial`` raises ``PeerIdMismatch``, ``HandshakeError`` (including
``CertificateError``), ``DialError`` or ``EndpointClosed``; streams raise
``StreamReset``, ``StreamClosed`` and ``ConnectionClosed``.  Every private
aioquic access lives in ``aioquic_compat``.
"""

from overlay.transport.config import TransportConfig
from overlay.transport.connection import QuicConn
from overlay.transport.endpoint import DatagramHook, QuicEndpoint, is_stun
from overlay.transport.errors import BindError, CertificateError, EndpointClosed, InvalidToken
from overlay.transport.stream import QuicStream
from overlay.transport.tls import (
    CertificateVerifier,
    TlsCredentials,
    generate_credentials,
    verify_certificate_chain,
)

__all__ = [
    "BindError",
    "CertificateError",
    "InvalidToken",
    "CertificateVerifier",
    "DatagramHook",
    "EndpointClosed",
    "QuicConn",
    "QuicEndpoint",
    "QuicStream",
    "TlsCredentials",
    "TransportConfig",
    "generate_credentials",
    "is_stun",
    "verify_certificate_chain",
]
