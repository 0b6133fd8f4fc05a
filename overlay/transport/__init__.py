"""QUIC transport: one UDP endpoint per address, libp2p TLS, byte streams.

aioquic's sans-IO ``QuicConnection`` is driven by our own datagram protocol
so that one socket serves dials, inbound connections and (through the
datagram hook) STUN and hole punching.
"""

from overlay.transport.config import TransportConfig
from overlay.transport.connection import QuicConn
from overlay.transport.endpoint import DatagramHook, QuicEndpoint, is_stun
from overlay.transport.errors import BindError, CertificateError, EndpointClosed
from overlay.transport.stream import QuicStream
from overlay.transport.tls import TlsCredentials, generate_credentials, verify_certificate_chain

__all__ = [
    "BindError",
    "CertificateError",
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
